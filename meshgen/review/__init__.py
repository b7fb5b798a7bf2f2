"""Commands for reviewing and understanding a mesh: plan, explain, graph."""
