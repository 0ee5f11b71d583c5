"""The building blocks of the registry: steps, identities, expressions, results, and how an identity is verified.

An :class:`Identity` claims ``lhs == rhs`` on the admissible domain, optionally through intermediate forms (its
``steps``: lhs = step₁ = step₂ = … = rhs, each with the reason it holds). :func:`check` verifies every link of the
chain

1. **symbolically**: the difference, with the display symbols expanded, simplifies to 0 (the numerator of the
   difference over a common denominator expands to 0, or ``sympy.simplify`` gives 0); where that fails because sympy
   cannot see that a radicand or a logarithm's argument is positive, the same after the positive parametrisation of
   :mod:`theory.symbols` (radicands and log arguments factored first, so that √(xy) = √x√y is legitimate, and
   logarithms combined into one, legitimate because every log argument is positive on the domain);
2. **numerically**: every form of the chain agrees with every other at random admissible points in 60-digit
   arithmetic (a backup that also catches a wrong parametrisation).

The verdict is ``"symbolic"`` when every link was proven, else ``"numeric"`` (the spot check alone passed).
An identity marked ``nonneg=True`` also claims ``rhs ≥ 0``; that is proven from sympy's assumptions on the
parametrised ``rhs`` (a square times a non-negative symbol, …) or, failing that, checked at the random points.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass, field

import mpmath
import sympy as sp
from sympy.core.function import AppliedUndef

from . import symbols as sy

SPOT_CHECK_DPS = 60  #: digits of the numeric spot check; forms must agree to 1e-40 relative


# ================================================================================================ data types
@dataclass(frozen=True)
class Step:
    """One link of a derivation chain: the next form of the expression and why it equals the previous one."""

    reason: str
    expr: object


@dataclass(frozen=True)
class Identity:
    """``lhs == rhs`` on the admissible domain, through ``steps`` (lhs = steps[0].expr = … = rhs).

    ``assume``: extra substitutions that encode an identity-specific domain with positive symbols (applied in the proof
    and in the spot check, after the global parametrisation). ``nonneg``: also claim ``rhs ≥ 0``. ``expect``: the
    verdict the tests require (``"symbolic"`` unless sympy is known to need the numeric backup). ``order = (h, n)``
    makes the claim asymptotic, lhs = rhs + O(hⁿ) as h → 0, proven by a series expansion of the difference.
    """

    id: str
    statement: str
    lhs: object
    rhs: object
    steps: tuple = ()
    nonneg: bool = False
    assume: dict = field(default_factory=dict)
    expect: str = "symbolic"
    samplers: dict = field(default_factory=dict)
    order: tuple | None = None  #: (h, n): the claim is lhs = rhs + O(hⁿ) as h → 0, not lhs = rhs

    def chain(self) -> list:
        """[(reason, expr)]: the lhs (reason ''), each step, then the rhs unless the last step already is it."""
        out = [("", sp.sympify(self.lhs))]
        out += [(st.reason, sp.sympify(st.expr)) for st in self.steps]
        rhs = sp.sympify(self.rhs)
        if len(out) == 1 or out[-1][1] != rhs:
            out.append(("", rhs))
        return out

    def prepared(self, expr):
        """``expr`` with definitions expanded and the positive parametrisation (global, then ``assume``) applied."""
        return sy.parametrise(expr).xreplace({k: sy.parametrise(v) for k, v in self.assume.items()})


@dataclass(frozen=True)
class Expression:
    """A named sympy expression of ordered arguments, for comparison with the library's numbers.

    :meth:`mp` evaluates it with mpmath at the working precision set by ``dps`` (default 50 digits).
    """

    name: str
    expr: object
    args: tuple
    description: str = ""

    def __post_init__(self):
        object.__setattr__(self, "_fn", None)

    @property
    def expanded(self):
        return sy.expand_definitions(self.expr)

    def mp(self, *values, dps: int = 50):
        if self._fn is None:
            object.__setattr__(self, "_fn", sp.lambdify(self.args, self.expanded, "mpmath"))
        with mpmath.workdps(dps):
            return self._fn(*[mpmath.mpf(v) if isinstance(v, (int, float, str)) else v for v in values])


@dataclass(frozen=True)
class Result:
    """One result of the paper: where it is, how it is derived, and the links that tie it to the library.

    ``functions`` are dotted paths into ``analytic_dpm`` (resolved by the registry test, never imported here);
    ``tests`` are pytest node ids ``"tests/<file>.py::<test>"`` of the tests that compare ``expressions`` with those
    functions; ``notebook`` is the notebook that shows the result (optional until the notebooks exist).
    """

    id: str
    title: str
    paper: str
    summary: str
    identities: tuple
    expressions: tuple
    functions: tuple
    tests: tuple
    notebook: str | None = None
    notes: tuple = ()

    def expression(self, name: str) -> Expression:
        for e in self.expressions:
            if e.name == name:
                return e
        raise KeyError(f"result {self.id!r} has no expression {name!r}; it has {[e.name for e in self.expressions]}")

    def identity(self, ident: str) -> Identity:
        for i in self.identities:
            if i.id == ident:
                return i
        raise KeyError(f"result {self.id!r} has no identity {ident!r}")


@dataclass(frozen=True)
class Verdict:
    how: str  # "symbolic" or "numeric"
    links: tuple  # per link of the chain: "symbolic", "symbolic (parametrised)" or "numeric"
    nonneg: str | None  # None, "symbolic" or "numeric"
    points: int
    seconds: float


# ================================================================================================ symbolic proof
def _numerator_expands_to_zero(e) -> bool:
    num, _ = sp.together(e).as_numer_denom()
    return sp.expand(num) == 0


def _factor_radicands_and_logs(e):
    """Factor every radicand and every log argument so that √(xy) = √x √y and log(xy) = log x + log y apply to the
    (positive) factors."""
    e = e.replace(
        lambda x: x.is_Pow and x.exp.is_Rational and x.exp.q == 2 and not x.base.is_Atom,
        lambda x: sp.Pow(sp.factor(sp.cancel(x.base)), x.exp),
    )
    e = e.replace(lambda x: isinstance(x, sp.log), lambda x: sp.log(sp.factor(sp.cancel(x.args[0]))))
    e = sp.expand_power_base(e, force=False)
    return sp.expand_log(e, force=False)


def _log_argument(e):
    """Combine the logarithms of ``e`` into one log(X) and return X (None when they do not combine). Legitimate here:
    every identity is between real quantities, so each log's argument is positive on the domain."""
    comb = sp.logcombine(sp.expand_log(e, force=True), force=True)
    if isinstance(comb, sp.log):
        return comb.args[0]
    if isinstance(comb, sp.Mul):
        logs = [f for f in comb.args if isinstance(f, sp.log)]
        if len(logs) == 1 and all(f.is_number and f != 0 for f in comb.args if not isinstance(f, sp.log)):
            return logs[0].args[0]
    return None


def _is_zero(e, allow_log_combine: bool = True) -> bool:
    """True when sympy shows e == 0: numerator expansion (radicands and log arguments factored), logarithms combined
    into one, and ``sympy.simplify`` as the last resort."""
    e = e.doit()
    for form in (e, _factor_radicands_and_logs(e)):
        try:
            if _numerator_expands_to_zero(form):
                return True
        except (TypeError, ValueError, NotImplementedError, sp.PolynomialError):
            pass
    if allow_log_combine and e.has(sp.log):
        arg = _log_argument(e)
        if arg is not None and not arg.has(sp.log) and _is_zero(arg - 1, allow_log_combine=False):
            return True
    try:
        return sp.simplify(e) == 0
    except (TypeError, ValueError, NotImplementedError, RecursionError, sp.PolynomialError):
        return False


def _elements(expr) -> list:
    """The entries of a matrix (row by row), or [expr]."""
    return list(expr) if isinstance(expr, sp.MatrixBase) else [expr]


def prove_equal(a, b, identity: Identity | None = None) -> str | None:
    """"symbolic" (the display symbols expanded, the difference is 0) or "symbolic (parametrised)" (0 after the
    positive parametrisation) if sympy proves a == b (entrywise for matrices), else None."""
    a, b = sp.sympify(a), sp.sympify(b)
    if isinstance(a, sp.MatrixBase) or isinstance(b, sp.MatrixBase):
        if sp.Matrix(a).shape != sp.Matrix(b).shape:
            return None
        verdicts = [prove_equal(x, y, identity) for x, y in zip(_elements(a), _elements(b))]
        if any(v is None for v in verdicts):
            return None
        return "symbolic (parametrised)" if "symbolic (parametrised)" in verdicts else "symbolic"
    diff = sy.expand_definitions(a - b)
    if identity is not None and identity.assume:
        diff = diff.xreplace({k: sy.expand_definitions(v) for k, v in identity.assume.items()})
    diff = diff.doit()
    try:
        if _numerator_expands_to_zero(diff):
            return "symbolic"
        if diff.has(sp.log):
            arg = _log_argument(diff)
            if arg is not None and not arg.has(sp.log) and _numerator_expands_to_zero(arg - 1):
                return "symbolic"
    except (TypeError, ValueError, NotImplementedError, sp.PolynomialError):
        pass
    par = identity.prepared(a - b) if identity is not None else sy.parametrise(diff)
    if _is_zero(par):
        return "symbolic (parametrised)"
    return None


def prove_series(identity: Identity) -> str | None:
    """Prove lhs − rhs = O(hⁿ) for ``identity.order = (h, n)``: the series of the difference to order n vanishes."""
    h, n = identity.order
    for prep, label in ((lambda e: sy.expand_definitions(e).xreplace(identity.assume), "symbolic"),
                        (identity.prepared, "symbolic (parametrised)")):
        diff = prep(sp.sympify(identity.lhs) - sp.sympify(identity.rhs)).doit()
        try:
            if _is_zero(sp.series(diff, h, 0, n).removeO()):
                return label
        except (TypeError, ValueError, NotImplementedError, sp.PolynomialError):
            continue
    return None


def _prove_nonneg(expr, identity: Identity) -> bool:
    par = _factor_radicands_and_logs(identity.prepared(expr).doit())
    for form in (par, sp.factor(sp.cancel(par)) if not par.has(sp.log, sp.exp) else par):
        if form.is_nonnegative:
            return True
    return False


# ================================================================================================ numeric spot check
def _sample(symbol, x: float, samplers: dict):
    """A value for ``symbol`` from a uniform x ∈ [0, 1): log-uniform for the positive parameters, [0, 1] for Γ."""
    if symbol in samplers:
        return samplers[symbol](x)
    if symbol in sy.PARAMETERS:
        return mpmath.mpf(10) ** (-6 + 10 * mpmath.mpf(x))
    if symbol in (sy.Gamma,):
        return mpmath.mpf(x)
    if symbol.is_positive or symbol.is_nonnegative:
        return mpmath.mpf(10) ** (-3 + 6 * mpmath.mpf(x))
    return -3 + 6 * mpmath.mpf(x)


def _concrete_functions(expr):
    """Replace undefined functions f(x, …) by a fixed smooth positive function (2 + sin(c·x + φ)) for evaluation."""
    repl = {}
    for app in expr.atoms(AppliedUndef):
        f = app.func
        if f in repl:
            continue
        h = int(hashlib.sha256(str(f).encode()).hexdigest()[:8], 16)
        c, ph = 1 + (h % 7) / 3, (h % 13) / 5
        xs = sp.symbols(f"_a0:{len(app.args)}", real=True)
        repl[f] = sp.Lambda(xs, 2 + sp.sin(c * sum(xs) + ph))
    return expr.replace(lambda e: isinstance(e, AppliedUndef) and e.func in repl,
                        lambda e: repl[e.func](*e.args)).doit() if repl else expr.doit()


def _evaluable(identity: Identity, expr):
    """``expr`` ready for mpmath: definitions expanded, expectations/integrals/derivatives evaluated (undefined
    functions made concrete), then the parametrisation applied."""
    return identity.prepared(_concrete_functions(sy.expand_definitions(expr)))


_COMPILED: dict = {}


def _compiled(identity: Identity):
    """(forms, free symbols, mpmath functions per form and entry, rhs function for the ≥ 0 claim), cached."""
    key = id(identity)  # the object itself is kept in the value, so the id is not reused
    if key not in _COMPILED:
        forms = [(reason, [_evaluable(identity, x) for x in _elements(e)]) for reason, e in identity.chain()]
        free = sorted(set().union(*(x.free_symbols for _, f in forms for x in f)), key=str)
        fns = [[sp.lambdify(free, x, "mpmath") for x in f] for _, f in forms]
        g_nonneg = sp.lambdify(free, _evaluable(identity, identity.rhs), "mpmath") if identity.nonneg else None
        _COMPILED[key] = (identity, (forms, free, fns, g_nonneg))
    return _COMPILED[key][1]


def spot_check(identity: Identity, uniforms: list[list[float]], dps: int = SPOT_CHECK_DPS) -> int:
    """Evaluate every form of the chain at the points given by ``uniforms`` (one list of floats in [0, 1) per point,
    one float per free symbol in sorted order); raise AssertionError on a mismatch. Returns the number of points."""
    forms, free, fns, g_nonneg = _compiled(identity)
    n = 0
    with mpmath.workdps(dps):
        tol = mpmath.mpf(10) ** (-40)
        for us in uniforms:
            vals = [_sample(sym, (us[i % len(us)] if us else 0.5), identity.samplers) for i, sym in enumerate(free)]
            got = [[fn(*vals) for fn in row] for row in fns]
            ref = got[0]
            for (reason, _), g in zip(forms[1:], got[1:]):
                assert len(g) == len(ref), f"{identity.id}: forms of different shapes"
                for gi, ri in zip(g, ref):
                    scale = max(1, abs(ri), abs(gi))
                    assert abs(gi - ri) <= tol * scale, (
                        f"{identity.id}: form after '{reason or 'rhs'}' differs from the lhs by "
                        f"{mpmath.nstr(gi - ri, 5)} at {dict(zip(map(str, free), (mpmath.nstr(v, 8) for v in vals)))}"
                    )
            if g_nonneg is not None:
                val = g_nonneg(*vals)
                assert val >= -tol * max(1, abs(val)), f"{identity.id}: rhs = {val} < 0 at a random admissible point"
            n += 1
    return n


def spot_check_series(identity: Identity, uniforms: list[list[float]], dps: int = SPOT_CHECK_DPS) -> int:
    """For ``order = (h, n)``: at random values of the other symbols, D(h) = lhs − rhs shrinks like hⁿ:
    log₁₀(|D(10⁻¹²)|/|D(10⁻¹³)|) ≥ n − ½ (a wrong coefficient of h^{n−1} gives n − 1), or D vanishes."""
    h, n = identity.order
    diff = _evaluable(identity, sp.sympify(identity.lhs) - sp.sympify(identity.rhs))
    free = sorted(diff.free_symbols - {h}, key=str)
    fn = sp.lambdify([h, *free], diff, "mpmath")
    with mpmath.workdps(dps):
        h1, h2 = mpmath.mpf(10) ** -12, mpmath.mpf(10) ** -13
        tiny = mpmath.mpf(10) ** (-dps + 10)
        for us in uniforms:
            vals = [_sample(sym, us[i % len(us)], identity.samplers) for i, sym in enumerate(free)]
            d1, d2 = abs(fn(h1, *vals)), abs(fn(h2, *vals))
            if d1 <= tiny and d2 <= tiny:
                continue
            rate = mpmath.log10(d1 / d2) if d2 > 0 else mpmath.inf
            assert rate >= n - 0.5, (
                f"{identity.id}: lhs − rhs shrinks like h^{mpmath.nstr(rate, 3)}, not h^{n}, at "
                f"{dict(zip(map(str, free), (mpmath.nstr(v, 8) for v in vals)))}")
    return len(uniforms)


def random_uniforms(seed: int, points: int, width: int = 16) -> list[list[float]]:
    rng = random.Random(seed)
    return [[rng.random() for _ in range(width)] for _ in range(points)]


# ================================================================================================ verdict
_CACHE: dict = {}


def check(identity: Identity, points: int = 12, seed: int = 0) -> Verdict:
    """Prove every link of ``identity``'s chain symbolically where sympy can, and spot-check all of them numerically.

    Returns a :class:`Verdict` (cached per identity id, points and seed). Raises AssertionError when the numeric
    check fails or a claimed ``rhs ≥ 0`` is violated.
    """
    key = (id(identity), points, seed)
    if key in _CACHE:
        return _CACHE[key][1]
    t0 = time.perf_counter()
    if identity.order is not None:
        links = [prove_series(identity) or "numeric"]
        nonneg = None
        n = spot_check_series(identity, random_uniforms(seed, points))
    else:
        chain = identity.chain()
        links = []
        for (_, a), (_, b) in zip(chain[:-1], chain[1:]):
            links.append(prove_equal(a, b, identity) or "numeric")
        nonneg = None
        if identity.nonneg:
            nonneg = "symbolic" if _prove_nonneg(identity.rhs, identity) else "numeric"
        n = spot_check(identity, random_uniforms(seed, points))
    how = "symbolic" if all(x.startswith("symbolic") for x in links) and nonneg in (None, "symbolic") else "numeric"
    v = Verdict(how, tuple(links), nonneg, n, time.perf_counter() - t0)
    _CACHE[key] = (identity, v)
    return v
