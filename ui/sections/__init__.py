"""Parts of the model page, one module per part, each with a `render(...)` function."""
