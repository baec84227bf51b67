"""Moving weights between seqdsl and other frameworks. `seqdsl.interop.torch`:
torch.nn.RNN, GRU and LSTM state_dicts (torch is imported only when used)."""
