"""C source for a neuron definition's fused kernels, generated from its traced step.

The skeleton (blocks of neurons on OpenMP threads, the loop over T, the recompute-then-BPTT
backward) is written once here; the per-neuron part is the traced step (`snnfunc._core.ir`), one
C statement per node in the definition's order. Built without FMA contraction or fast math,
so wherever the definition uses + - * / and comparisons the forward equals the reference
loop bit for bit.

The backward recomputes the states of every step of a block into a buffer, then walks back
in time. At each step it computes the forward step again and the step's vector-Jacobian
product. A cotangent no gradient reaches (an unused output; the final state's at the last
step) is absent, and its terms are left out, as autograd leaves them out in the reference;
which cotangents are present at a step depends on how far it is from the end, and settles
after a few steps: the kernel has one block of code for each distinct presence pattern.
"""

from __future__ import annotations


from pathlib import Path

from snnfunc._backends.c.spelling import CSpelling
from snnfunc._core import ir as _ir
from snnfunc._kernel.emit import Emitter
from snnfunc._kernel.plan import BackwardPlan, roots, scalar_inputs

IO_TYPES = {  # torch dtype name -> (C type in memory, compute type, load, store)
    "float32": ("float", "float", "({x})", "({x})"),
    "float64": ("double", "double", "({x})", "({x})"),
    "float16": ("uint16_t", "float", None, None),  # its bits; LD/ST in _F16
    "bfloat16": ("uint16_t", "float", "bf16_load({x})", "bf16_store({x})"),
}

_RUNTIME = Path(__file__).with_name("runtime")


def _runtime(name: str) -> str:
    """A runtime file's text as pasted into a kernel (its own documentation comment, up to the
    first `*/` and its newline, is not)."""
    text = (_RUNTIME / name).read_text()
    return text[text.index("*/\n") + 3:]


_VECTOR_MATH, _ROWS, _RUN = _runtime("vector_math.h"), _runtime("rows.h"), _runtime("launch.h")
_FAST_EXP, _F16, _DIRECT = _runtime("fast_exp.h"), _runtime("half.h"), _runtime("direct.h")
_X_ROWS = _runtime("rows_of_x.h")
_TYPES = "typedef {io} IO;\ntypedef {real} REAL;\n#define BLK {blk}\n"
_JOB = r"""typedef struct {{
  int64_t T, N, block;
  int64_t sxt, sxr, xc;  /* x[t, i] at x + t * sxt + (i / xc) * sxr + i % xc */
  const double *sc;  /* v_rest, then the surrogate's run-time parameters */
  const IO *x, *th, *gs, *gh, *sg;
  const REAL *st[{k}];  /* states in the compute type: float32 for half precision */
  const IO *par[{m}];
  const REAL *gst[{k}];
  REAL *tr[{k}];          /* the states after every step [T, N] (return_states), or NULL */
  const REAL *gtr[{k}];   /* their cotangents, or NULL */
  int64_t sst[{k}], spar[{m}], sth;
  IO *s, *h, *gx;
  REAL *gth;  /* gradients of step tensors in the compute type: summed over broadcast */
  REAL *st_out[{k}];
  REAL *gst0[{k}], *gpar[{m}];  /* dimensions in it before the input's dtype */
}} job_t;
"""


def _step_inputs(neuron, ids, single, states_from: str | None, shared=None) -> dict[str, str]:
    """C expressions for the step's inputs inside the loop over neurons `i` (the states from
    `states_from`, or none); a parameter or threshold `shared` by every neuron is one value of
    the block."""
    shared = _shared(neuron, shared)
    M = len(neuron.parameters)
    exprs = {"x": "GET(xt, XF)", "v_threshold": "TH" if shared[M] else "TH[i]", "v_rest": "vr"}
    for k, n in enumerate(neuron.states if states_from is not None else ()):
        exprs[f"state:{n}"] = states_from.format(k=k)
    for k, n in enumerate(neuron.parameters):
        exprs[f"param:{n}"] = f"P{k}" if shared[k] else f"P{k}[i]"
    return exprs


def _shared(neuron, shared):
    return tuple(shared) if shared is not None else (False,) * (len(neuron.parameters) + 1)


FORWARD_BLOCK = 16384  # neurons per forward block: long rows for the prefetchers
BACKWARD_BLOCK = 512  # at most, per backward block (fewer where T is long)
# the backward's prefetch of the rows of gs (gh, sg): every row of a block during its
# recompute where they take at most PF_ALL bytes, else PF_AHEAD bytes ahead of the walk back
# (all of them would push the kept values out of a 1 MiB L2 at long T)
PF_ALL = 131072
PF_AHEAD = 16384


def _preamble(neuron, dtype: str, blk: int, nbuf: int) -> str:
    io, real, ld, st = IO_TYPES[dtype]
    k, m = len(neuron.states), max(len(neuron.parameters), 1)
    head = (_VECTOR_MATH + _TYPES.format(io=io, real=real, blk=blk) + _ROWS
            + _JOB.format(k=k, m=m) + _X_ROWS)
    head += (f"#define NSTATES {k}\n#define NPARAMS {len(neuron.parameters)}\n"
             f"#define NBUF {nbuf}  /* values kept per neuron-step in the backward's buffer */\n")
    if dtype == "float16":
        return head + _F16
    return head + f"#define LD(x) {ld.format(x='x')}\n#define ST(x) {st.format(x='x')}\n" + _DIRECT


def _load_block(neuron, shared=None, heap=None) -> list[str]:
    """The block's states (arrays) and parameters and threshold (arrays, or one value where
    every neuron shares it); the loops vectorise (no stride inside them). The arrays are on
    the stack, or rows of `buf` from row `heap` on."""
    shared = _shared(neuron, shared)
    out = []
    rows = iter(range(heap or 0, 1 << 30))

    def array(name):
        return (f"REAL *restrict {name} = buf + {next(rows)} * j->block;" if heap
                else f"REAL {name}[BLK];")

    for k in range(len(neuron.states)):
        out.append(array(f"S{k}"))
        out.append(f"if (j->sst[{k}]) for (int64_t i = 0; i < n; i++) S{k}[i] = j->st[{k}][i0 + i];"
                   f" else {{ const REAL c = j->st[{k}][0]; for (int64_t i = 0; i < n; i++) "
                   f"S{k}[i] = c; }}")
    for k in range(len(neuron.parameters)):
        if shared[k]:
            out.append(f"const REAL P{k} = LD(j->par[{k}][0]);")
        else:
            out.append(array(f"P{k}"))
            out.append(f"for (int64_t i = 0; i < n; i++) P{k}[i] = LD(j->par[{k}][i0 + i]);")
    if shared[-1]:
        out.append("const REAL TH = LD(j->th[0]);")
    else:
        out.append(array("TH"))
        out.append("for (int64_t i = 0; i < n; i++) TH[i] = LD(j->th[i0 + i]);")
    out.append("const REAL vr = (REAL)j->sc[0];")
    out.append("const int64_t N = j->N, T = j->T;")
    return out


def forward_source(neuron, opts: dict, *, hard: bool, want_h: bool, dtype: str,
                   want_trace: bool = False, shared=None) -> str:
    """The C source of the forward kernel of one configuration; `shared` says, for each
    parameter and then the threshold, whether every neuron shares one value."""
    g, ids, outs = neuron.trace(opts, hard=hard, detach_reset=False)
    single = IO_TYPES[dtype][1] == "float"
    em = Emitter(g, CSpelling(single), _step_inputs(neuron, ids, single, "S{k}[i]", shared), "n")
    for i in [outs["s"], outs["h"], *outs["states"]]:
        em.emit(i)
    body = "\n        ".join(em.lines)
    stores = [f"PUT(st, SF, {em.name(outs['s'])});"]
    if want_h:
        stores.append(f"PUT(ht, HF, {em.name(outs['h'])});")
    stores += [f"S{k}[i] = {em.name(o)};" for k, o in enumerate(outs["states"])]
    K = len(neuron.states)
    traces = ""
    if want_trace:
        stores += [f"tr{k}t[i] = {em.name(o)};" for k, o in enumerate(outs["states"])]
        traces = " ".join(f"REAL *restrict tr{k}t = j->tr[{k}] + t * N + i0;" for k in range(K))
    finals = [f"for (int64_t i = 0; i < n; i++) j->st_out[{k}][i0 + i] = S{k}[i];"
              for k in range(len(neuron.states))]
    rows = 3 + len(neuron.states) + len(neuron.parameters) + 1 + 1
    src = f"""
static void fwd_block(const job_t *j, int64_t i0, int64_t n, REAL *buf) {{
  REAL *restrict XF = buf, *restrict SF = buf + j->block, *restrict HF = buf + 2 * j->block;  /* float16 */
  IO *restrict XG = (IO *)(buf + {rows - 1} * j->block);  /* a row of x gathered */
  (void)XF; (void)SF; (void)HF;
  {chr(10).join('  ' + line for line in _load_block(neuron, shared, heap=3)).strip()}
  for (int64_t t = 0; t < T; t++) {{
    const IO *restrict xt = x_row(j, t, i0, n, XG);
    IO *restrict st = j->s + t * N + i0;
    IO *restrict ht = {'j->h + t * N + i0' if want_h else 'NULL'};
    (void)ht;
    {traces}
    IN(xt, XF);
    for (int64_t i = 0; i < n; i++) {{
        {body}
        {' '.join(stores)}
    }}
    OUT(st, SF);{' OUT(ht, HF);' if want_h else ''}
  }}
  {chr(10).join('  ' + line for line in finals).strip()}
}}
static void bwd_block(const job_t *j, int64_t i0, int64_t n, REAL *buf) {{ (void)j; (void)i0; (void)n; (void)buf; }}
""" + _RUN
    return _preamble(neuron, dtype, FORWARD_BLOCK, 1) + f"#define FWD_ROWS {rows}\n" + src


def backward_source(neuron, opts: dict, *, hard: bool, detach: bool, surrogate_derivative,
                    has_gs: bool, has_gh: bool, has_gv: tuple, need: tuple, dtype: str,
                    has_gtr: tuple | None = None, shared=None) -> str:
    """The C source of the backward kernel of one configuration; `need` says, for each
    parameter, the threshold and then each state's initial value, whether its gradient is
    wanted; `shared`, whether every neuron shares one value of a parameter or threshold.

    The recompute keeps, for every step of the block, the forward values the plan
    keeps (`snnfunc._kernel.plan.kept_values`): the walk back reads them and computes the rest of what the VJP needs again with
    cheap operations."""
    single = IO_TYPES[dtype][1] == "float"
    plan = BackwardPlan.build(neuron, opts, hard=hard, detach=detach,
                              surrogate_derivative=surrogate_derivative, has_gs=has_gs,
                              has_gh=has_gh, has_gv=has_gv, need=need, has_gtr=has_gtr)
    patterns, fix, kept = plan.blocks, plan.fix, plan.kept
    K, M = len(neuron.states), len(neuron.parameters)
    recompute_g, rids, routs = plan.recompute
    n_forward = len(recompute_g.nodes)
    slot = {node: e for e, node in enumerate(kept)}
    has_gtr = tuple(has_gtr or (False,) * K)
    add_traces = " ".join(
        f"for (int64_t i = 0; i < n; i++) G{k}[i] += j->gtr[{k}][t * N + i0 + i];"
        for k in range(K) if has_gtr[k])
    blocks = []
    reads_x = False
    for b, (present, out, (g, ids, outs, res, wrt)) in enumerate(patterns):
        inputs = _step_inputs(neuron, ids, single, None, shared)  # states: where kept
        inputs["cot:s"] = "GET(gst, GSF)"
        inputs["cot:h"] = "GET(ght, GHF)"
        inputs["sg"] = "GET(sgt, SGF)"  # a surrogate derivative computed in torch
        for k in range(K):
            inputs[f"cot:state:{k}"] = f"G{k}[i]"
        inputs.update({f"{_ir.SCALAR_INPUT}{k}": f"j->sc[{k + 1}]"
                       for k in range(scalar_inputs(g))})
        em = Emitter(g, CSpelling(single), inputs, "n",
                      {node: f"buf[({e} * T + t) * n + i]" for node, e in slot.items()},
                     vjp_from=n_forward)
        for c in roots(neuron, ids, res, need):
            em.emit(c)
        gx, cth = res[ids["x"]], res[ids["v_threshold"]]
        writes = []
        reads_x |= "x" in em.used
        writes.append(f"PUTG(gxt, GXF, {em.name(gx) if gx is not None else '(REAL)0'});")
        for k, n in enumerate(neuron.states):
            c = res[ids[f"state:{n}"]]
            if c is not None:
                writes.append(f"G{k}[i] = {em.name(c)};")
        for k, n in enumerate(neuron.parameters):
            c = res[ids[f"param:{n}"]]
            if c is not None and need[k]:
                writes.append(f"GP{k}[i] += {em.name(c)};")
        if cth is not None and need[M]:
            writes.append(f"GTH[i] += {em.name(cth)};")
        body = "\n          ".join(em.lines + writes)
        blocks.append(f"""{{  /* cotangents of the states present: {present} */
        for (int64_t i = 0; i < n; i++) {{
          {body}
        }}
      }}""")
    # which step's block: r = T - 1 - t steps from the end; past the chain, the patterns
    # repeat from `fix` on
    L, period = len(patterns), len(patterns) - fix
    dispatch = "\n      else ".join(f"if (rb == {b}) {blk}" for b, blk in enumerate(blocks))
    pre = f"const int64_t rb = r < {L} ? r : {fix} + (r - {fix}) % {period};"
    # present cotangents of the initial state: those going out of the block that ran at t = 0
    out_table = ", ".join("{" + ", ".join("1" if p else "0" for p in out) + "}"
                          for _, out, _ in patterns)
    load = "\n  ".join(_load_block(neuron, shared))
    rem = Emitter(recompute_g, CSpelling(single),
                  _step_inputs(neuron, rids, single, "S{k}[i]", shared), "n")
    for o in routs["states"]:
        rem.emit(o)
    for node in kept:
        rem.emit(node)
    rbody = "\n        ".join(
        rem.lines
        + [f"buf[({e} * T + t) * n + i] = {rem.name(node)};" for node, e in slot.items()]
        + [f"S{k}[i] = {rem.name(o)};" for k, o in enumerate(routs["states"])])
    init = "\n  ".join(
        [f"REAL G{k}[BLK]; for (int64_t i = 0; i < n; i++) G{k}[i] = "
         f"{'j->gst[%d][i0 + i]' % k if has_gv[k] else '(REAL)0'};" for k in range(K)]
        + [f"REAL GP{k}[BLK]; for (int64_t i = 0; i < n; i++) GP{k}[i] = 0;" for k in range(M)]
        + ["REAL GTH[BLK]; for (int64_t i = 0; i < n; i++) GTH[i] = 0;"])
    finals = "\n  ".join(
        [f"for (int64_t i = 0; i < n; i++) j->gst0[{k}][i0 + i] = "
         f"present0[{k}] ? G{k}[i] : (REAL)0;" for k in range(K) if need[M + 1 + k]]
        + [f"if (j->gpar[{k}]) for (int64_t i = 0; i < n; i++) j->gpar[{k}][i0 + i] = GP{k}[i];"
           for k in range(M)]
        + ["if (j->gth) for (int64_t i = 0; i < n; i++) j->gth[i0 + i] = GTH[i];"])
    # which cotangents of the initial state are present: those out of the block run at t = 0
    present0 = (f"const int64_t rl = T - 1, last = rl < {len(patterns)} ? rl : "
                f"{fix} + (rl - {fix}) % {period};\n  const int *present0 = OUT_PRESENT[last];")
    if dtype in ("float32", "float64"):
        gx_io = ("#define STREAM_GX 1\n#define PUTG(p, tmp, v) ((tmp)[i] = (v))\n"
                 "#define OUTG(p, tmp) out_row((tmp), (p), n, nt)\n")
    else:
        gx_io = "#define STREAM_GX 0\n#define PUTG PUT\n#define OUTG OUT\n"
    src = (_preamble(neuron, dtype, BACKWARD_BLOCK, max(len(kept), 1)) + _FAST_EXP
           + "#define FWD_ROWS 1\n"
           + f"#define PF_AHEAD {PF_AHEAD}\n#define PF_ALL {PF_ALL}\n"
           + gx_io) + f"""
static void fwd_block(const job_t *j, int64_t i0, int64_t n, REAL *buf) {{ (void)j; (void)i0; (void)n; (void)buf; }}
static const int OUT_PRESENT[{len(patterns)}][{K}] = {{{out_table}}};
static void bwd_block(const job_t *j, int64_t i0, int64_t n, REAL *buf) {{
  REAL XF[BLK], GSF[BLK], GHF[BLK], SGF[BLK], GXF[BLK];  /* rows in the compute type (float16) */
  IO XG[BLK];  /* a row of x gathered */
  (void)XF; (void)GSF; (void)GHF; (void)SGF; (void)GXF;
  {load}
  const int64_t row = n * (int64_t)sizeof(IO);
  /* rows of gs (gh, sg) prefetched ahead: all of them in the recompute where they fit in
     the cache beside the kept values, else `ahead` steps before the walk back reads them */
  const int64_t ahead = T * row <= PF_ALL ? T : PF_AHEAD / row + 1;
  /* rows of x for the recompute: where a block's rows of every step fit (short T), prefetched
     during the walk back of the block before; else (they would not stay in the cache that long)
     `ahead` steps before the recompute reads them */
  const int fits = T * row <= PF_ALL, xs = j->xc >= N;
  const int nt = STREAM_GX && T * N * (int64_t)sizeof(IO) >= NT_BYTES;  /* gx streamed */
  const int64_t next = i0 + n < N ? (N - i0 - n < n ? N - i0 - n : n) * (int64_t)sizeof(IO) : 0;
  for (int64_t t = 0; t < T; t++) {{  /* recompute the states before every step */
    const IO *restrict xt = x_row(j, t, i0, n, XG);
    IN(xt, XF);
    if (!fits && xs && t + ahead < T) pf_read(j->x + (t + ahead) * j->sxt + i0, row);
    if (t >= T - ahead) {{  /* the rows the walk back reads first */
      if (j->gs) pf_read(j->gs + t * N + i0, row);
      if (j->gh) pf_read(j->gh + t * N + i0, row);
      if (j->sg) pf_read(j->sg + t * N + i0, row);
    }}
    if (!nt) pf_write(j->gx + t * N + i0, row);
    for (int64_t i = 0; i < n; i++) {{
        {rbody}
    }}
  }}
  {init}
  for (int64_t t = T - 1; t >= 0; t--) {{
    const int64_t r = T - 1 - t;
    const IO *restrict xt = {'x_row(j, t, i0, n, XG)' if reads_x else 'NULL'};
    const IO *restrict gst = j->gs ? j->gs + t * N + i0 : NULL;
    const IO *restrict ght = j->gh ? j->gh + t * N + i0 : NULL;
    const IO *restrict sgt = j->sg ? j->sg + t * N + i0 : NULL;
    IO *restrict gxt = j->gx + t * N + i0;
    (void)xt; (void)gst; (void)ght; (void)sgt;
    {'IN(xt, XF);' if reads_x else ''}
    if (t >= ahead) {{  /* the rows it reads `ahead` steps on */
      const int64_t ta = (t - ahead) * N + i0;
      if (gst) pf_read(j->gs + ta, row);
      if (ght) pf_read(j->gh + ta, row);
      if (sgt) pf_read(j->sg + ta, row);
    }}
    if (gst) IN(gst, GSF);
    if (ght) IN(ght, GHF);
    if (sgt) IN(sgt, SGF);
    {add_traces}
    {pre}
    {dispatch}
    OUTG(gxt, GXF);
    if (next && fits && xs) pf_read(j->x + t * j->sxt + i0 + n, next);  /* the next block's recompute */
  }}
  nt_fence(nt);
  {present0 if any(need[M + 1:]) else ''}
  {finals}
}}
""" + _RUN
    return src
