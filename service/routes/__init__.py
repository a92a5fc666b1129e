"""One router per resource: chat, models, ask, tokenize, feedback, health, admin."""
