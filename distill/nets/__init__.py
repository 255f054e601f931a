"""Networks: the feature frontend, teachers' and students' backbones, and output heads."""
