"""How the math is spread over devices: layout/groups (dims), pipeline stages, Ascend plans, explicit collectives."""
