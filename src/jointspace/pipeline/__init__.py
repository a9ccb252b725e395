"""The model side: frozen backbone features (cached), the gated encoder, its loss and training."""
