/* The grammar decoder's Viterbi beam search, compiled: assistant.grammar.GrammarGraph.decode's loop.
 *
 * The same search as the pure-Python loop in assistant/grammar.py (`GrammarGraph._search_python`),
 * step for step and in the same order, with the same float64 arithmetic, so the two return the same
 * hypotheses (tests/assistant/test_grammar_search.py checks it). States are (position in the graph's spelled
 * units, after-blank) plus the start state before the first word; a position names its word arc.
 *
 * Built by setup.py as an optional extension: when it cannot be built, the hub runs the Python loop.
 * No numpy C API: the tables arrive as C-contiguous buffers (int32, float64), are checked and copied
 * once into a SearchGraph, which keeps its work arrays between searches.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int32_t tag;    /* tag id */
    int32_t parent; /* previous history entry, -1: none */
} Hist;

typedef struct {
    double score;  /* best score into the state this step (valid where stamp == step) */
    int32_t hist;  /* its slot tags: a history entry, -1: none */
    int32_t stamp; /* the step it was last reached in */
} State;

typedef struct {
    State *state;
    Py_ssize_t nstates;
    int32_t *order; /* states in the order they were first reached this step */
    Py_ssize_t n;
    double best;    /* the best score reached this step */
    int32_t step;   /* counts on across searches, so the stamps need no clearing */
    Hist *hists;
    Py_ssize_t nhist, caphist;
} Work;

static int push_hist(Work *w, int32_t tag, int32_t parent) {
    if (w->nhist == w->caphist) {
        Py_ssize_t cap = w->caphist ? w->caphist * 2 : 4096;
        Hist *grown = (Hist *)realloc(w->hists, (size_t)cap * sizeof(Hist));
        if (!grown) return -1;
        w->hists = grown;
        w->caphist = cap;
    }
    w->hists[w->nhist].tag = tag;
    w->hists[w->nhist].parent = parent;
    return (int)(w->nhist++);
}

/* Viterbi "keep the better path into state": the first path reached keeps its place in the order. */
static inline void relax(Work *w, int32_t state, double s, int32_t hist) {
    State *st = &w->state[state];
    if (st->stamp != w->step) {
        st->stamp = w->step;
        w->order[w->n++] = state;
        st->score = s;
        st->hist = hist;
    } else if (s > st->score) {
        st->score = s;
        st->hist = hist;
    } else {
        return;
    }
    if (s > w->best) w->best = s;
}

/* A tagged arc entered: a new history entry, only when the path into the state improves. */
static inline int relax_tagged(Work *w, int32_t state, double s, int32_t tag, int32_t hist) {
    const State *st = &w->state[state];
    if (st->stamp == w->step && !(s > st->score)) return 0;
    if (tag >= 0) {
        int h = push_hist(w, tag, hist);
        if (h < 0) return -1;
        hist = h;
    }
    relax(w, state, s, hist);
    return 0;
}

/* The k-th largest (1-based) of values[0..n): quickselect on a scratch copy. */
static double kth_largest(const double *values, Py_ssize_t n, Py_ssize_t k, double *scratch) {
    memcpy(scratch, values, (size_t)n * sizeof(double));
    Py_ssize_t lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        double pivot = scratch[lo + (hi - lo) / 2];
        Py_ssize_t i = lo, j = hi;
        while (i <= j) {
            while (scratch[i] > pivot) i++;
            while (scratch[j] < pivot) j--;
            if (i <= j) {
                double t = scratch[i];
                scratch[i] = scratch[j];
                scratch[j] = t;
                i++;
                j--;
            }
        }
        if (want <= j) hi = j;
        else if (want >= i) lo = i;
        else break;
    }
    return scratch[want];
}

/* ---- the graph object: tables copied and checked once, work arrays kept between searches ---- */

typedef struct {
    PyObject_HEAD
    int32_t *units, *pos_arc, *pos_last, *arc_first, *arc_dst, *arc_tag, *succ_start, *succ;
    int32_t *succ_first, *succ_unit, *succ_tag; /* per successor: its arc's first position, unit, tag (read in a row) */
    Py_ssize_t npos, narcs, nnodes, nsucc;
    int32_t start_node, max_unit;
    Work w;
    double *scratch, *cur_score;
    int32_t *cur_state, *cur_hist, *kept;
} Graph;

static int32_t *copy_table(PyObject *obj, const char *name, Py_ssize_t *count) {
    Py_buffer buf;
    if (PyObject_GetBuffer(obj, &buf, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    if (buf.itemsize != 4 || !buf.format || (strcmp(buf.format, "i") != 0 && strcmp(buf.format, "<i") != 0 &&
                                             strcmp(buf.format, "=i") != 0)) {
        PyErr_Format(PyExc_ValueError, "%s: expected int32 items", name);
        PyBuffer_Release(&buf);
        return NULL;
    }
    *count = buf.len / 4;
    int32_t *out = (int32_t *)malloc((size_t)(buf.len > 0 ? buf.len : 4));
    if (!out) {
        PyBuffer_Release(&buf);
        PyErr_NoMemory();
        return NULL;
    }
    memcpy(out, buf.buf, (size_t)buf.len);
    PyBuffer_Release(&buf);
    return out;
}

static void graph_free(Graph *g) {
    free(g->units); free(g->pos_arc); free(g->pos_last); free(g->arc_first); free(g->arc_dst); free(g->arc_tag);
    free(g->succ_start); free(g->succ); free(g->succ_first); free(g->succ_unit); free(g->succ_tag); free(g->w.state); free(g->w.order); free(g->w.hists);
    free(g->scratch); free(g->cur_score); free(g->cur_state); free(g->cur_hist); free(g->kept);
    g->units = g->pos_arc = g->pos_last = g->arc_first = g->arc_dst = g->arc_tag = g->succ_start = g->succ = NULL;
    g->succ_first = g->succ_unit = g->succ_tag = NULL;
    g->w.state = NULL; g->w.order = NULL; g->w.hists = NULL; g->scratch = g->cur_score = NULL;
    g->cur_state = g->cur_hist = g->kept = NULL;
}

static void Graph_dealloc(Graph *g) {
    graph_free(g);
    Py_TYPE(g)->tp_free((PyObject *)g);
}

static int Graph_init(Graph *g, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"units", "position_arc", "position_last", "arc_first", "arc_dst", "arc_tag",
                             "successor_start", "successors", "start_node", NULL};
    PyObject *o[8];
    int start_node;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOOOOOi", kwlist, &o[0], &o[1], &o[2], &o[3], &o[4], &o[5],
                                     &o[6], &o[7], &start_node))
        return -1;
    graph_free(g);
    Py_ssize_t n[8];
    int32_t **dst[8] = {&g->units, &g->pos_arc, &g->pos_last, &g->arc_first, &g->arc_dst, &g->arc_tag,
                        &g->succ_start, &g->succ};
    for (int i = 0; i < 8; i++) {
        *dst[i] = copy_table(o[i], kwlist[i], &n[i]);
        if (!*dst[i]) return -1;
    }
    g->npos = n[0]; g->narcs = n[4]; g->nnodes = n[6] - 1; g->nsucc = n[7]; g->start_node = start_node;
    if (n[1] != g->npos || n[2] != g->npos || n[3] != g->narcs || n[5] != g->narcs || g->nnodes < 1 ||
        start_node < 0 || start_node >= g->nnodes || g->npos > (INT32_MAX - 2) / 2) {
        PyErr_SetString(PyExc_ValueError, "grammar tables: inconsistent sizes");
        return -1;
    }
    /* everything the search indexes with is checked here: a bad table is an error, never a stray read */
    g->max_unit = 0;
    for (Py_ssize_t i = 0; i < g->npos; i++) {
        if (g->units[i] < 1 || g->pos_arc[i] < 0 || g->pos_arc[i] >= g->narcs || (!g->pos_last[i] && i + 1 >= g->npos)) {
            PyErr_Format(PyExc_ValueError, "grammar tables: position %zd is out of range", i);
            return -1;
        }
        if (g->units[i] > g->max_unit) g->max_unit = g->units[i];
    }
    for (Py_ssize_t a = 0; a < g->narcs; a++) {
        if (g->arc_first[a] < 0 || g->arc_first[a] >= g->npos || g->arc_dst[a] < 0 || g->arc_dst[a] >= g->nnodes) {
            PyErr_Format(PyExc_ValueError, "grammar tables: arc %zd is out of range", a);
            return -1;
        }
    }
    for (Py_ssize_t i = 0; i <= g->nnodes; i++) {
        if (g->succ_start[i] < 0 || g->succ_start[i] > g->nsucc || (i > 0 && g->succ_start[i] < g->succ_start[i - 1])) {
            PyErr_SetString(PyExc_ValueError, "grammar tables: successor offsets out of range");
            return -1;
        }
    }
    for (Py_ssize_t i = 0; i < g->nsucc; i++) {
        if (g->succ[i] < 0 || g->succ[i] >= g->narcs) {
            PyErr_SetString(PyExc_ValueError, "grammar tables: successor out of range");
            return -1;
        }
    }
    size_t nsucc = (size_t)(g->nsucc > 0 ? g->nsucc : 1);
    g->succ_first = (int32_t *)malloc(nsucc * sizeof(int32_t));
    g->succ_unit = (int32_t *)malloc(nsucc * sizeof(int32_t));
    g->succ_tag = (int32_t *)malloc(nsucc * sizeof(int32_t));
    if (!g->succ_first || !g->succ_unit || !g->succ_tag) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < g->nsucc; i++) {
        g->succ_first[i] = g->arc_first[g->succ[i]];
        g->succ_unit[i] = g->units[g->succ_first[i]];
        g->succ_tag[i] = g->arc_tag[g->succ[i]];
    }
    /* state 0: before the first word; 1 + 2 * position + after_blank otherwise */
    size_t nstates = (size_t)(1 + 2 * g->npos);
    g->w.state = (State *)calloc(nstates, sizeof(State));
    g->w.order = (int32_t *)malloc(nstates * sizeof(int32_t));
    g->scratch = (double *)malloc(nstates * sizeof(double));
    g->cur_score = (double *)malloc(nstates * sizeof(double));
    g->cur_state = (int32_t *)malloc(nstates * sizeof(int32_t));
    g->cur_hist = (int32_t *)malloc(nstates * sizeof(int32_t));
    g->kept = (int32_t *)malloc(nstates * sizeof(int32_t));
    if (!g->w.state || !g->w.order || !g->scratch || !g->cur_score || !g->cur_state || !g->cur_hist || !g->kept) {
        PyErr_NoMemory();
        return -1;
    }
    g->w.nstates = (Py_ssize_t)nstates;
    g->w.step = 0;
    return 0;
}

/* The search holds the GIL: one graph's work arrays serve one search at a time. */
static PyObject *Graph_viterbi(Graph *g, PyObject *args) {
    PyObject *obj;
    Py_ssize_t beam;
    double prune, blank_penalty;
    if (!PyArg_ParseTuple(args, "Ondd", &obj, &beam, &prune, &blank_penalty)) return NULL;
    if (!g->w.state) {
        PyErr_SetString(PyExc_RuntimeError, "SearchGraph: not initialized");
        return NULL;
    }
    if (beam < 1) {
        PyErr_SetString(PyExc_ValueError, "beam: expected a positive integer");
        return NULL;
    }
    Py_buffer buf;
    if (PyObject_GetBuffer(obj, &buf, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return NULL;
    PyObject *result = NULL;
    if (buf.itemsize != 8 || !buf.format || (strcmp(buf.format, "d") != 0 && strcmp(buf.format, "<d") != 0 &&
                                             strcmp(buf.format, "=d") != 0) ||
        buf.ndim != 2 || buf.shape[1] < 2 || buf.shape[1] <= g->max_unit) {
        PyErr_Format(PyExc_ValueError, "log_probs: expected float64 [steps, 1 + units] with units >= %d",
                     (int)g->max_unit);
        goto done;
    }
    Py_ssize_t steps = buf.shape[0], cols = buf.shape[1];
    const double *lp = (const double *)buf.buf;
    const int32_t *units = g->units, *pos_arc = g->pos_arc, *pos_last = g->pos_last, *arc_dst = g->arc_dst,
                  *succ_start = g->succ_start, *succ_first = g->succ_first, *succ_unit = g->succ_unit,
                  *succ_tag = g->succ_tag;
    Work *w = &g->w;
    w->nhist = 0;
    if (w->step > INT32_MAX - steps - 2) { /* the stamps would wrap: start them again */
        memset(w->state, 0, (size_t)w->nstates * sizeof(State));
        w->step = 0;
    }
    double *cur_score = g->cur_score, *scratch = g->scratch;
    int32_t *cur_state = g->cur_state, *cur_hist = g->cur_hist, *kept = g->kept;
    Py_ssize_t ncur = 1;
    cur_state[0] = 0;
    cur_score[0] = 0.0;
    cur_hist[0] = -1;
    const int32_t first_start = succ_start[g->start_node], last_start = succ_start[g->start_node + 1];
    int failed = 0;
    for (Py_ssize_t step = 0; step < steps && ncur > 0 && !failed; step++) {
        const double *row = lp + step * cols;
        double blank = row[0] - blank_penalty;
        w->step++;
        w->n = 0;
        w->best = -INFINITY;
        for (Py_ssize_t c = 0; c < ncur && !failed; c++) {
            int32_t state = cur_state[c], hist = cur_hist[c];
            double score = cur_score[c];
            if (state == 0) {
                relax(w, 0, score + blank, hist);
                for (int32_t k = first_start; k < last_start; k++) {
                    if (relax_tagged(w, 1 + 2 * succ_first[k], score + row[succ_unit[k]], succ_tag[k], hist) < 0)
                        failed = 1;
                }
                continue;
            }
            int32_t p = (state - 1) >> 1, after_blank = (state - 1) & 1, unit = units[p];
            if (!after_blank) relax(w, 1 + 2 * p, score + row[unit], hist);
            relax(w, 2 + 2 * p, score + blank, hist);
            if (!pos_last[p]) {
                int32_t next_unit = units[p + 1];
                if (after_blank || next_unit != unit) relax(w, 1 + 2 * (p + 1), score + row[next_unit], hist);
                continue;
            }
            int32_t node = arc_dst[pos_arc[p]];
            for (int32_t k = succ_start[node]; k < succ_start[node + 1]; k++) {
                int32_t next_unit = succ_unit[k];
                if (after_blank || next_unit != unit) {
                    if (relax_tagged(w, 1 + 2 * succ_first[k], score + row[next_unit], succ_tag[k], hist) < 0)
                        failed = 1;
                }
            }
        }
        if (failed || w->n == 0) break;
        /* prune: within `prune` of the best, then the `beam` best, keeping the order reached */
        State *st = w->state;
        double floor = w->best - prune;
        Py_ssize_t nkept = 0;
        for (Py_ssize_t i = 0; i < w->n; i++)
            if (st[w->order[i]].score > floor) kept[nkept++] = w->order[i];
        ncur = 0;
        if (nkept > beam) {
            for (Py_ssize_t i = 0; i < nkept; i++) cur_score[i] = st[kept[i]].score;
            double edge = kth_largest(cur_score, nkept, beam, scratch);
            Py_ssize_t room = beam;
            for (Py_ssize_t i = 0; i < nkept; i++)
                if (cur_score[i] > edge) room--;
            for (Py_ssize_t i = 0; i < nkept; i++) {
                double s = cur_score[i];
                if (s > edge || (s == edge && room-- > 0)) kept[ncur++] = kept[i];
            }
        } else {
            ncur = nkept;
        }
        for (Py_ssize_t i = 0; i < ncur; i++) {
            cur_state[i] = kept[i];
            cur_score[i] = st[kept[i]].score;
            cur_hist[i] = st[kept[i]].hist;
        }
    }
    if (failed) {
        PyErr_NoMemory();
        goto done;
    }
    /* the states at a word's last unit: (arc, score, slot tag ids newest first) */
    result = PyList_New(0);
    if (!result) goto done;
    for (Py_ssize_t c = 0; c < ncur; c++) {
        int32_t state = cur_state[c];
        if (state == 0) continue;
        int32_t p = (state - 1) >> 1;
        if (!pos_last[p]) continue;
        Py_ssize_t ntags = 0;
        for (int32_t h = cur_hist[c]; h >= 0; h = w->hists[h].parent) ntags++;
        PyObject *tags = PyTuple_New(ntags);
        if (!tags) goto fail;
        Py_ssize_t i = 0;
        for (int32_t h = cur_hist[c]; h >= 0; h = w->hists[h].parent) {
            PyObject *v = PyLong_FromLong(w->hists[h].tag);
            if (!v) {
                Py_DECREF(tags);
                goto fail;
            }
            PyTuple_SET_ITEM(tags, i++, v);
        }
        PyObject *item = Py_BuildValue("(idN)", (int)pos_arc[p], cur_score[c], tags);
        if (!item || PyList_Append(result, item) < 0) {
            Py_XDECREF(item);
            goto fail;
        }
        Py_DECREF(item);
    }
    goto done;
fail:
    Py_CLEAR(result);
done:
    PyBuffer_Release(&buf);
    return result;
}

static PyMethodDef Graph_methods[] = {
    {"viterbi", (PyCFunction)Graph_viterbi, METH_VARARGS,
     "viterbi(log_probs, beam, prune, blank_penalty) -> [(arc, score, slot tag ids newest first)]: the surviving "
     "states at a word's last unit after the last step, in the search's order. log_probs: float64 "
     "[steps, 1 + units], C-contiguous."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject GraphType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "assistant._search.SearchGraph",
    .tp_doc = "SearchGraph(units, position_arc, position_last, arc_first, arc_dst, arc_tag, successor_start, "
              "successors, start_node): a grammar graph's int32 tables, checked and copied once.",
    .tp_basicsize = sizeof(Graph),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Graph_init,
    .tp_dealloc = (destructor)Graph_dealloc,
    .tp_methods = Graph_methods,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "assistant._search",
                                    "The grammar decoder's compiled beam search.", -1, NULL,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__search(void) {
    if (PyType_Ready(&GraphType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&GraphType);
    if (PyModule_AddObject(m, "SearchGraph", (PyObject *)&GraphType) < 0) {
        Py_DECREF(&GraphType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
