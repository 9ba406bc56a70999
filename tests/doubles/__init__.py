"""Test doubles that speak real protocols on real sockets, so clients are aimed at them, never patched.

- `hub_server.HubServer`: the Hugging Face Hub routes that `huggingface_hub` uses to read model repos.
"""
