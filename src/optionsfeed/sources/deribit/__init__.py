"""Deribit: inverse BTC/ETH options over the venue's public JSON-RPC WebSocket API."""
