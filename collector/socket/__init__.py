"""The SOCKET transport: IB Gateway through `ib_async` (`transport.py`), its market data
subscriptions (`subscriptions.py`) and the contracts as IB needs and the bridge shows them
(`contracts.py`)."""
