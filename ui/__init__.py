"""The Gradio UI, handed finished services; it never builds models itself. Nothing imports ui."""
