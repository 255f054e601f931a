"""Small contexts shared by tests."""

TWO_INTENTS = """
context:
  expressions:
    changeLightState:
      - "[turn, switch] $state:state (the) $location:location [light, lights]"
    setColor:
      - "make (the) $location:location [light, lights] $color:color"
  slots:
    state: ["on", "off"]
    location: ["kitchen", "bedroom"]
    color: ["red", "blue"]
"""
"""Two intents, three slots: enough to exercise synthesis and the CLI in seconds."""
