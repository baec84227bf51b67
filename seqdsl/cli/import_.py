"""`seqdsl import SPEC IN.pt -o OUT.npz`: the state_dict of torch.nn.RNN,
GRU or LSTM as a cell's or a network sequence's parameters."""
from __future__ import annotations

from .common import EPILOG
from .interop import Target, read_pt, target_args, write_npz


def add_parser(sub) -> None:
    i = sub.add_parser("import", help="read a torch RNN/GRU/LSTM state_dict (.pt) as parameters",
                       description="Load IN.pt with torch.load(weights_only=True): the "
                       "state_dict of a torch.nn.RNN (tanh), GRU or LSTM, and write it to "
                       "OUT.npz as the parameters of a cell (RNN, TorchGRU or LSTM) or of a "
                       "network's sequence of them (names like `h.0.fwd.Wu`), in the "
                       "state_dict's dtype. The sequence's layers must match the module's. "
                       "Needs PyTorch.", epilog=EPILOG)
    target_args(i, "IN.pt", "the state_dict, as torch.save writes it")
    i.add_argument("-o", "--output", required=True, metavar="OUT.npz",
                   help="where to write the parameters (read them with np.load)")
    i.set_defaults(run=run)


def run(args) -> int:
    from ..interop.torch import layout_of
    target = Target(args)
    state = read_pt(args.data)
    params = target.import_(state, args.prefix)
    write_npz(args.output, params)
    dtype = next(iter(params.values())).dtype
    print(f"imported {layout_of(state, prefix=args.prefix)} into {target.what}: "
          f"{len(params)} parameters ({dtype}) written to {args.output}")
    return 0
