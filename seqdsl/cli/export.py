"""`seqdsl export SPEC PARAMS.npz -o OUT.pt`: a cell's or a network
sequence's parameters as the state_dict of torch.nn.RNN, GRU or LSTM."""
from __future__ import annotations

from .common import EPILOG
from .interop import Target, read_npz, target_args, write_pt


def add_parser(sub) -> None:
    e = sub.add_parser("export", help="write parameters as a torch RNN/GRU/LSTM state_dict (.pt)",
                       description="Read the parameters of a cell (RNN, TorchGRU or LSTM) or of "
                       "a network's sequence of them from PARAMS.npz (np.savez of the names "
                       "`Wu`, or `h.0.fwd.Wu` in a network; other sequences' and heads' "
                       "parameters are ignored) and save them with torch.save as the state_dict "
                       "of the torch.nn.RNN, GRU or LSTM that computes the same thing. Prints "
                       "that module's constructor. Needs PyTorch.", epilog=EPILOG)
    target_args(e, "PARAMS.npz", "the parameters, as np.savez writes them")
    e.add_argument("-o", "--output", required=True, metavar="OUT.pt",
                   help="where to write the state_dict")
    e.set_defaults(run=run)


def run(args) -> int:
    from ..interop.torch import layout_of
    target = Target(args)
    params = read_npz(args.data)
    state = target.export(params, args.prefix)
    write_pt(args.output, state)
    dtype = next(iter(state.values())).dtype
    print(f"exported {target.what} to {args.output}: {len(state)} tensors ({dtype}) of "
          f"{layout_of(state, prefix=args.prefix)}")
    return 0
