"""Training loops. Each returns ``(history, trained)``: a pandas DataFrame with one row per step
or evaluation, and what it trained (DESIGN §2). ``tabular`` holds the classic prediction updates,
which return the value history itself."""
