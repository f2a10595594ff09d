"""The teacher's side of TED: solving, summarising and critiquing attempts, compressing a library,
and the gate every lesson passes before it may reach an agent's system prompt."""
