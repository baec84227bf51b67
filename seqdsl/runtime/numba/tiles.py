"""The register-tiled kernels of packed step products (packed.py), written
in LLVM IR: each multiplies panels of PANEL_ROWS weight rows, laid out k by
k, by a step's batch.

Two layouts of a tile:
* by columns (`_tile_of`): a panel's PANEL_ROWS rows by one or two vectors
  of the batch's columns (a k-major copy of x): PANEL_ROWS × 2 vectors of
  accumulators stay in registers for the whole k loop, each step of which
  loads one value of each row and the vectors of the batch. It makes the
  product transposed (rows by columns).
* by rows (`narrow_tile`): for a batch of at most NARROW_COLUMNS
  columns, the rows in a vector's lanes, each value of x broadcast. The
  column tiles would leave most lanes of their half vector empty (4
  columns: half of 8 float32; 1: seven eighths); this one uses every lane,
  reads x as it is and makes the product batch-major. Measured on a Zen 4
  (float32, µs a product, 100-step loops, against the column tiles and
  OpenBLAS), (m, k, n) = (1024, 256, 4): 20 against 43 and 61 on one
  thread, 15 against 24 and 35 on two; (2048, 512, 4) 80 against 170 and
  254; (1024, 256, 2) 20 against 43 and 50. It makes NARROW_COLUMNS
  columns whatever the batch, so a single column (a gemv) is slower than
  OpenBLAS's, (1024, 256, 1) 20 against 12, and runs there (gemm.py).

Vectors are 64 bytes (16 float32, 8 float64), AVX-512's width, which LLVM
splits into two halves on a CPU with AVX2 only; the narrow tiles' are 32.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

PANEL_ROWS = 12  # 12 rows × 2 vectors: 24 accumulators of AVX-512's 32 registers
VECTOR_BYTES = 64


def _vector_type(dtype, vector_bytes: int) -> ir.VectorType:
    element = ir.FloatType() if dtype == types.float32 else ir.DoubleType()
    return ir.VectorType(element, vector_bytes // (4 if dtype == types.float32 else 8))


def _fma(builder, vec: ir.VectorType):
    """LLVM's fused multiply-add on vectors of `vec`'s type."""
    suffix = "f32" if isinstance(vec.element, ir.FloatType) else "f64"
    return cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vec, [vec, vec, vec]), f"llvm.fma.v{vec.count}{suffix}")


def _broadcast(builder, vec: ir.VectorType, value):
    """`value` in every lane of a vector of `vec`'s type."""
    one = builder.insert_element(ir.Constant(vec, ir.Undefined), value,
                                 ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, ir.Constant(vec, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), vec.count),
                                              [0] * vec.count))


def _arrays(context, builder, signature, args) -> list:
    """A tile's three arrays (the panels, the batch, out), to index."""
    return [context.make_array(ty)(context, builder, value)
            for ty, value in zip(signature.args[:3], args[:3])]


def _tile_of(vectors: int, vector_bytes: int = VECTOR_BYTES):
    """The kernel for a tile of PANEL_ROWS rows by `vectors` vectors of
    `vector_bytes` of columns: out[p·R + r, c + i] = Σ_k panels[p, k, r] ·
    b[k, c + i]."""

    @intrinsic
    def tile(typingctx, panels, b, out, p, c):
        if panels.dtype not in (types.float32, types.float64):
            return None

        def codegen(context, builder, signature, args):
            a_ty = signature.args[0]
            panel_arr, b_arr, out_arr = _arrays(context, builder, signature, args)
            p, c = args[3], args[4]
            vec = _vector_type(a_ty.dtype, vector_bytes)
            lanes = vec.count
            i64 = ir.IntType(64)
            k_count, width = cgutils.unpack_tuple(builder, b_arr.shape, 2)
            fma = _fma(builder, vec)
            zero = ir.Constant(vec, [0.0] * lanes)
            accs = [cgutils.alloca_once_value(builder, zero) for _ in range(PANEL_ROWS * vectors)]
            first = builder.mul(builder.mul(p, k_count), ir.Constant(i64, PANEL_ROWS))

            def vector_at(base, offset):
                at = builder.gep(base, [ir.Constant(i64, offset)])
                return builder.bitcast(at, vec.as_pointer())

            with cgutils.for_range(builder, k_count) as loop:
                k = loop.index
                b_row = builder.gep(b_arr.data, [builder.add(builder.mul(k, width), c)])
                bs = [builder.load(vector_at(b_row, lanes * v), align=1) for v in range(vectors)]
                a_row = builder.gep(panel_arr.data, [
                    builder.add(first, builder.mul(k, ir.Constant(i64, PANEL_ROWS)))])
                for r in range(PANEL_ROWS):
                    a = _broadcast(builder, vec, builder.load(builder.gep(a_row, [
                        ir.Constant(i64, r)])))
                    for v in range(vectors):
                        acc = accs[r * vectors + v]
                        builder.store(builder.call(fma, [a, bs[v], builder.load(acc)]), acc)
            top = builder.mul(p, ir.Constant(i64, PANEL_ROWS))
            for r in range(PANEL_ROWS):
                row = builder.add(top, ir.Constant(i64, r))
                out_row = builder.gep(out_arr.data, [builder.add(builder.mul(row, width), c)])
                for v in range(vectors):
                    builder.store(builder.load(accs[r * vectors + v]),
                                  vector_at(out_row, lanes * v), align=1)
            return context.get_dummy_value()
        return types.void(panels, b, out, p, c), codegen
    return tile


def _chunks(panels: int, lanes: int) -> list[list[tuple[int, int, int]]]:
    """The rows of `panels` panels side by side, in vectors of `lanes`
    rows (a last one shorter): each a list of (panel, first row, rows) runs
    of one panel's consecutive rows (two panels of 12 float32 rows: 8 of
    the first, its last 4 with the second's first 4, the second's last 8)."""
    rows = [(q, r) for q in range(panels) for r in range(PANEL_ROWS)]
    chunks = []
    for start in range(0, len(rows), lanes):
        runs: list[tuple[int, int, int]] = []
        for q, r in rows[start:start + lanes]:
            if runs and runs[-1][0] == q:
                runs[-1] = (q, runs[-1][1], runs[-1][2] + 1)
            else:
                runs.append((q, r, 1))
        chunks.append(runs)
    return chunks


NARROW_COLUMNS = 4


@intrinsic
def narrow_tile(typingctx, panels, x, out, p, p2, o):
    """The narrow kernel: x's columns (n of them, at most NARROW_COLUMNS)
    by the rows of panels p and p2 side by side (24 float32 rows fill three
    32-byte vectors), the rows in a vector's lanes, each value of x
    broadcast: out[c, o + r] = Σ_k panels[p, k, r] · x[c, k] and
    out[c, o + R + r] = Σ_k panels[p2, k, r] · x[c, k]. It always makes
    NARROW_COLUMNS columns (x's last repeated) and stores n: one kernel
    for every narrow batch, as a kernel a count each added seconds to the
    library's first compile."""
    if panels.dtype not in (types.float32, types.float64):
        return None

    def codegen(context, builder, signature, args):
        a_ty = signature.args[0]
        panel_arr, x_arr, out_arr = _arrays(context, builder, signature, args)
        element = _vector_type(a_ty.dtype, VECTOR_BYTES).element
        align = a_ty.dtype.bitwidth // 8
        i64, i32 = ir.IntType(64), ir.IntType(32)
        k_count = cgutils.unpack_tuple(builder, panel_arr.shape, 3)[1]
        n, x_k = cgutils.unpack_tuple(builder, x_arr.shape, 2)
        out_m = cgutils.unpack_tuple(builder, out_arr.shape, 2)[1]
        chunks = _chunks(2, 256 // a_ty.dtype.bitwidth)  # 32-byte vectors
        vecs = [ir.VectorType(element, sum(rows for _, _, rows in runs)) for runs in chunks]
        fmas = [_fma(builder, v) for v in vecs]
        accs = [[cgutils.alloca_once_value(builder, ir.Constant(v, [0.0] * v.count))
                 for v in vecs] for _ in range(NARROW_COLUMNS)]
        panel_size = builder.mul(k_count, ir.Constant(i64, PANEL_ROWS))
        firsts = [builder.mul(args[3], panel_size), builder.mul(args[4], panel_size)]
        x_rows = [builder.select(builder.icmp_signed("<", ir.Constant(i64, c), n),
                                 ir.Constant(i64, c), builder.sub(n, ir.Constant(i64, 1)))
                  for c in range(NARROW_COLUMNS)]

        def run_at(k, q, r, rows):
            at = builder.add(firsts[q], builder.add(
                builder.mul(k, ir.Constant(i64, PANEL_ROWS)), ir.Constant(i64, r)))
            ptr = builder.bitcast(builder.gep(panel_arr.data, [at]),
                                  ir.VectorType(element, rows).as_pointer())
            return builder.load(ptr, align=align)

        def joined(parts):
            whole = parts[0]
            for part in parts[1:]:  # runs of equal length, so one shuffle joins two
                lanes = whole.type.count + part.type.count
                whole = builder.shuffle_vector(
                    whole, part, ir.Constant(ir.VectorType(i32, lanes), list(range(lanes))))
            return whole

        with cgutils.for_range(builder, k_count) as loop:
            k = loop.index
            rows = [joined([run_at(k, q, r, count) for q, r, count in runs]) for runs in chunks]
            for c in range(NARROW_COLUMNS):
                value = builder.load(builder.gep(x_arr.data, [
                    builder.add(builder.mul(x_rows[c], x_k), k)]))
                for v, row, fma, acc in zip(vecs, rows, fmas, accs[c]):
                    builder.store(builder.call(fma, [row, _broadcast(builder, v, value),
                                                     builder.load(acc)]), acc)
        for c in range(NARROW_COLUMNS):
            with builder.if_then(builder.icmp_signed("<", ir.Constant(i64, c), n)):
                offset = 0
                for v, acc in zip(vecs, accs[c]):
                    at = builder.add(builder.add(builder.mul(ir.Constant(i64, c), out_m), args[5]),
                                     ir.Constant(i64, offset))
                    builder.store(builder.load(acc), builder.bitcast(
                        builder.gep(out_arr.data, [at]), v.as_pointer()), align=align)
                    offset += v.count
        return context.get_dummy_value()
    return types.void(panels, x, out, p, p2, o), codegen


tile2 = _tile_of(2)
tile1 = _tile_of(1)
# A last half vector of columns (8 float32): a step of 8 rows or fewer, or a
# tail, padded to a whole vector would do twice its multiply-adds.
tile_half = _tile_of(1, VECTOR_BYTES // 2)
