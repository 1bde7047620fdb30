//! Choosing a convolution algorithm from cuDNN's heuristics (`cudnnGet*Algorithm_v7`), with every
//! value cuDNN writes read as a raw `u32` before it is compared or formatted.
//!
//! Why raw: the bindings' enums (algorithm, status, determinism, math type) are Rust enums, and a
//! value they do not list (a newer cuDNN adds an algorithm) would be undefined behaviour the moment
//! it sits in one. The heuristics therefore write into [`RawPerf`], a mirror of the three
//! `cudnnConvolution*AlgoPerf_t` structs with `u32` in place of every enum (the layout is checked
//! at compile time), and a raw value becomes an enum only through [`RawEnum::from_raw`], which
//! knows every listed variant. An unknown value is shown as a number and never chosen.
//!
//! Which algorithms a plan may use:
//! - **f32**: any listed algorithm with strict FMA math (no TF32), deterministic if any is.
//! - **bf16** (PSEUDO_BFLOAT16): only the algorithms whose roundings [`Tol::Bf16`] of `ilr check`
//!   bounds: implicit GEMM (plain or precomputed) forward, and ALGO_1 for both backward passes.
//!   Winograd, FFT and split-K variants keep bf16 intermediates (transformed tiles, partial sums)
//!   and round more often than "bf16 operands, f32 sums, one bf16 rounding of the result".
//!   Math: tensor cores, default or FMA (the heuristics are asked with each in turn).
//!
//! [`Tol::Bf16`]: super::check

use super::super::ConvShape;
use anyhow::Result;
use cudarc::cudnn::sys;
use std::ffi::c_int;

/// Largest workspace an algorithm may ask for.
pub(crate) const WORKSPACE_LIMIT: usize = 1 << 30;

/// A C enum of cuDNN whose values arrive as raw `u32`.
pub(crate) trait RawEnum: Copy + std::fmt::Debug + 'static {
    /// Every variant the bindings list (without the `..._COUNT` markers).
    const ALL: &'static [Self];
    fn raw(self) -> u32;
    /// The variant with this value, if the bindings list one.
    fn from_raw(raw: u32) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.raw() == raw)
    }
    /// The variant's name, or the number for a value the bindings do not list.
    fn name(raw: u32) -> String {
        match Self::from_raw(raw) {
            Some(v) => format!("{v:?}"),
            None => format!("{raw} (unknown to these bindings)"),
        }
    }
}

macro_rules! raw_enum {
    ($t:ty: $($v:ident),* $(,)?) => {
        impl RawEnum for $t {
            const ALL: &'static [Self] = &[$(<$t>::$v),*];
            fn raw(self) -> u32 {
                self as u32
            }
        }
    };
}

raw_enum!(sys::cudnnConvolutionFwdAlgo_t:
    CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
    CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
    CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
    CUDNN_CONVOLUTION_FWD_ALGO_DIRECT,
    CUDNN_CONVOLUTION_FWD_ALGO_FFT,
    CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING,
    CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD,
    CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED,
);
raw_enum!(sys::cudnnConvolutionBwdDataAlgo_t:
    CUDNN_CONVOLUTION_BWD_DATA_ALGO_0,
    CUDNN_CONVOLUTION_BWD_DATA_ALGO_1,
    CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT,
    CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING,
    CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD,
    CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED,
);
raw_enum!(sys::cudnnConvolutionBwdFilterAlgo_t:
    CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0,
    CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1,
    CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT,
    CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3,
    CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD,
    CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED,
    CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING,
);
raw_enum!(sys::cudnnMathType_t:
    CUDNN_DEFAULT_MATH,
    CUDNN_TENSOR_OP_MATH,
    CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION,
    CUDNN_FMA_MATH,
);

/// The algorithm enum of one direction and the algorithms a bf16 plan may use in it.
pub(crate) trait Algo: RawEnum {
    /// "forward", "backward-data" or "backward-filter".
    const DIRECTION: &'static str;
    /// No transform and no bf16 partial sums (see the module docs).
    fn bf16_allowed(self) -> bool;
}

impl Algo for sys::cudnnConvolutionFwdAlgo_t {
    const DIRECTION: &'static str = "forward";
    fn bf16_allowed(self) -> bool {
        matches!(
            self,
            Self::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM
                | Self::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM
        )
    }
}
impl Algo for sys::cudnnConvolutionBwdDataAlgo_t {
    const DIRECTION: &'static str = "backward-data";
    fn bf16_allowed(self) -> bool {
        self == Self::CUDNN_CONVOLUTION_BWD_DATA_ALGO_1
    }
}
impl Algo for sys::cudnnConvolutionBwdFilterAlgo_t {
    const DIRECTION: &'static str = "backward-filter";
    fn bf16_allowed(self) -> bool {
        self == Self::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1
    }
}

/// The math types a plan may use, in the order the heuristics are asked with them: strict FMA for
/// f32 (no TF32, whose 10-bit mantissa would fail the CPU comparison); for bf16 tensors tensor
/// cores, then default, then FMA (which change nothing about the data: it is bf16 already). Never
/// `..._ALLOW_CONVERSION`.
pub(crate) fn allowed_math(bf16: bool) -> &'static [sys::cudnnMathType_t] {
    use sys::cudnnMathType_t as M;
    if bf16 {
        &[M::CUDNN_TENSOR_OP_MATH, M::CUDNN_DEFAULT_MATH, M::CUDNN_FMA_MATH]
    } else {
        &[M::CUDNN_FMA_MATH]
    }
}

/// One result of `cudnnGet*Algorithm_v7` as cuDNN writes it: the common layout of
/// `cudnnConvolutionFwdAlgoPerf_t`, `...BwdDataAlgoPerf_t` and `...BwdFilterAlgoPerf_t`, every
/// enum as its raw `u32`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct RawPerf {
    pub algo: u32,
    pub status: u32,
    pub time: f32,
    pub memory: usize,
    pub determinism: u32,
    pub math_type: u32,
    pub reserved: [c_int; 3],
}

macro_rules! same_layout {
    ($($t:ty),*) => {$(
        const _: () = {
            use std::mem::{align_of, offset_of, size_of};
            assert!(size_of::<RawPerf>() == size_of::<$t>() && align_of::<RawPerf>() == align_of::<$t>());
            assert!(offset_of!(RawPerf, algo) == offset_of!($t, algo));
            assert!(offset_of!(RawPerf, status) == offset_of!($t, status));
            assert!(offset_of!(RawPerf, time) == offset_of!($t, time));
            assert!(offset_of!(RawPerf, memory) == offset_of!($t, memory));
            assert!(offset_of!(RawPerf, determinism) == offset_of!($t, determinism));
            assert!(offset_of!(RawPerf, math_type) == offset_of!($t, mathType));
            assert!(offset_of!(RawPerf, reserved) == offset_of!($t, reserved));
        };
    )*};
}
same_layout!(
    sys::cudnnConvolutionFwdAlgoPerf_t,
    sys::cudnnConvolutionBwdDataAlgoPerf_t,
    sys::cudnnConvolutionBwdFilterAlgoPerf_t
);

const SUCCESS: u32 = sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS as u32;
const DETERMINISTIC: u32 = sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC as u32;

impl RawPerf {
    fn describe<A: Algo>(&self) -> String {
        format!(
            "{}/status {}/{}{}",
            A::name(self.algo),
            self.status,
            sys::cudnnMathType_t::name(self.math_type),
            if self.determinism == DETERMINISTIC { "" } else { "/non-deterministic" }
        )
    }
}

/// The choice for one direction: the algorithm and the math type its descriptor must get.
pub(crate) type Choice<A> = (A, sys::cudnnMathType_t);

/// The first result that succeeded, has a listed algorithm (for bf16: one of the allowed ones), an
/// allowed math type and fits the workspace limit, deterministic if any such is. `Ok(None)` when
/// none qualifies; the caller asks again with another math type or gives up with [`no_algorithm`].
pub(crate) fn pick<A: Algo>(s: &ConvShape, bf16: bool, results: &[RawPerf]) -> Option<Choice<A>> {
    let allowed_math = allowed_math(bf16);
    let usable = |r: &RawPerf| -> Option<(Choice<A>, bool)> {
        let algo = A::from_raw(r.algo)?;
        let math = sys::cudnnMathType_t::from_raw(r.math_type)?;
        let ok = r.status == SUCCESS
            && allowed_math.contains(&math)
            && r.memory <= WORKSPACE_LIMIT
            && (!bf16 || algo.bf16_allowed());
        ok.then_some(((algo, math), r.determinism == DETERMINISTIC))
    };
    let candidates: Vec<_> = results.iter().filter_map(usable).collect();
    if let Some((c, _)) = candidates.iter().find(|(_, det)| *det) {
        return Some(*c);
    }
    let (c, _) = candidates.first()?;
    eprintln!(
        "warning: cuDNN offers no deterministic {} algorithm for {s:?}; using {:?} (results may vary run to run)",
        A::DIRECTION,
        c.0
    );
    Some(*c)
}

/// A convolution shape in a few words: "n8 ci16 32x32 co32 k3 s2 p1".
pub(crate) fn shape_label(s: &ConvShape) -> String {
    format!("n{} ci{} {}x{} co{} k{} s{} p{}", s.n, s.c_in, s.h, s.w, s.c_out, s.kernel, s.stride, s.pad)
}

/// The error when no query gave a usable algorithm: the shape, the precision and every result seen.
pub(crate) fn no_algorithm<A: Algo>(s: &ConvShape, bf16: bool, seen: &[RawPerf]) -> anyhow::Error {
    let seen: Vec<String> = seen.iter().map(RawPerf::describe::<A>).collect();
    let (kind, rule, fix) = if bf16 {
        (
            "bf16",
            "implicit-GEMM forward / ALGO_1 backward, tensor-core, default or FMA math",
            "; train with --precision f32 (train.precision = \"f32\")",
        )
    } else {
        ("FP32", "strict FMA math", "")
    };
    anyhow::anyhow!(
        "cuDNN has no {kind} {} algorithm ({rule}) for the convolution {} (heuristics returned: {}){fix}",
        A::DIRECTION,
        shape_label(s),
        if seen.is_empty() { "nothing".to_string() } else { seen.join(", ") }
    )
}

/// Asks the heuristics of one direction once per math type in `queries` (`query(i, requested,
/// &mut returned, results)` with the i-th query descriptor) until [`pick`] finds an algorithm.
pub(crate) fn choose<A: Algo>(
    s: &ConvShape,
    bf16: bool,
    queries: usize,
    mut query: impl FnMut(usize, c_int, &mut c_int, *mut RawPerf) -> Result<()>,
) -> Result<Choice<A>> {
    const N: usize = 8; // ≥ every direction's algorithm count: the heuristics return all of them.
    let mut seen = Vec::new();
    for i in 0..queries {
        let mut r = [RawPerf::default(); N];
        let mut got = 0;
        query(i, N as c_int, &mut got, r.as_mut_ptr())?;
        let r = &r[..(got.max(0) as usize).min(N)];
        if let Some(c) = pick::<A>(s, bf16, r) {
            return Ok(c);
        }
        seen.extend_from_slice(r);
    }
    Err(no_algorithm::<A>(s, bf16, &seen))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sys::cudnnConvolutionBwdDataAlgo_t as Bd;
    use sys::cudnnConvolutionBwdFilterAlgo_t as Bf;
    use sys::cudnnConvolutionFwdAlgo_t as Fwd;
    use sys::cudnnMathType_t as M;

    const S: ConvShape = ConvShape { n: 2, c_in: 3, h: 8, w: 8, c_out: 4, kernel: 3, stride: 1, pad: 1 };

    fn perf(algo: u32, math: M, deterministic: bool) -> RawPerf {
        RawPerf {
            algo,
            status: SUCCESS,
            memory: 1024,
            determinism: if deterministic { DETERMINISTIC } else { 0 },
            math_type: math as u32,
            ..RawPerf::default()
        }
    }

    #[test]
    fn raw_values_map_to_listed_variants_and_unknown_ones_to_numbers() {
        for &a in Fwd::ALL {
            assert_eq!(Fwd::from_raw(a as u32), Some(a));
        }
        assert_eq!(Fwd::ALL.len(), Fwd::CUDNN_CONVOLUTION_FWD_ALGO_COUNT as usize);
        assert_eq!(Bd::ALL.len(), Bd::CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT as usize);
        assert_eq!(Bf::ALL.len(), Bf::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT as usize);
        assert_eq!(Bd::from_raw(1), Some(Bd::CUDNN_CONVOLUTION_BWD_DATA_ALGO_1));
        assert_eq!(M::from_raw(3), Some(M::CUDNN_FMA_MATH));
        // The COUNT marker and values from a newer cuDNN are not algorithms.
        assert_eq!(Fwd::from_raw(8), None);
        assert_eq!(Bf::from_raw(57), None);
        assert_eq!(Fwd::name(1), "CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM");
        assert_eq!(Fwd::name(57), "57 (unknown to these bindings)");
        assert_eq!(M::name(u32::MAX), format!("{} (unknown to these bindings)", u32::MAX));
    }

    #[test]
    fn raw_perf_reads_what_cudnn_writes_into_its_own_struct() {
        // cuDNN writes a cudnnConvolutionFwdAlgoPerf_t; we read the same bytes as RawPerf.
        let mut theirs: sys::cudnnConvolutionFwdAlgoPerf_t =
            // SAFETY: a plain C struct whose enums all have a zero variant.
            unsafe { std::mem::zeroed() };
        theirs.algo = Fwd::CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD;
        theirs.memory = 12345;
        theirs.determinism = sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC;
        theirs.mathType = M::CUDNN_TENSOR_OP_MATH;
        // SAFETY: same size and layout (checked at compile time); every bit pattern is a RawPerf.
        let ours: RawPerf = unsafe { std::mem::transmute(theirs) };
        assert_eq!((ours.algo, ours.status, ours.memory), (6, SUCCESS, 12345));
        assert_eq!((ours.determinism, ours.math_type), (DETERMINISTIC, 1));
    }

    #[test]
    fn unknown_values_are_never_chosen_and_are_reported_as_numbers() {
        let r = [
            perf(99, M::CUDNN_FMA_MATH, true),
            RawPerf { math_type: 77, ..perf(0, M::CUDNN_FMA_MATH, true) },
        ];
        assert_eq!(pick::<Fwd>(&S, false, &r), None);
        let msg = no_algorithm::<Fwd>(&S, false, &r).to_string();
        assert!(msg.contains("99 (unknown") && msg.contains("77 (unknown"), "{msg}");
        assert!(msg.contains("n2 ci3 8x8 co4 k3 s1 p1"), "{msg}");
    }

    #[test]
    fn bf16_plans_use_only_implicit_gemm_forward_and_algo_1_backward() {
        let wino = Fwd::CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED as u32;
        let fwd = [perf(wino, M::CUDNN_TENSOR_OP_MATH, true), perf(1, M::CUDNN_TENSOR_OP_MATH, true)];
        assert_eq!(
            pick::<Fwd>(&S, true, &fwd).map(|c| c.0),
            Some(Fwd::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM)
        );
        let fwd32 = [perf(wino, M::CUDNN_FMA_MATH, true)];
        assert_eq!(
            pick::<Fwd>(&S, false, &fwd32).map(|c| c.0),
            Some(Fwd::CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED)
        );
        let bd = [perf(0, M::CUDNN_DEFAULT_MATH, true), perf(4, M::CUDNN_DEFAULT_MATH, true)];
        assert_eq!(pick::<Bd>(&S, true, &bd), None, "ALGO_0 and Winograd are not allowed in bf16");
        let bd = [perf(0, M::CUDNN_DEFAULT_MATH, true), perf(1, M::CUDNN_DEFAULT_MATH, true)];
        assert_eq!(
            pick::<Bd>(&S, true, &bd),
            Some((Bd::CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, M::CUDNN_DEFAULT_MATH))
        );
        let bf = [perf(3, M::CUDNN_TENSOR_OP_MATH, true), perf(1, M::CUDNN_FMA_MATH, true)];
        assert_eq!(pick::<Bf>(&S, true, &bf).map(|c| c.0), Some(Bf::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1));
        // f32 never takes tensor-core math (TF32); conversion math is never allowed.
        assert_eq!(pick::<Bf>(&S, false, &[perf(1, M::CUDNN_TENSOR_OP_MATH, true)]), None);
        assert_eq!(pick::<Bf>(&S, true, &[perf(1, M::CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION, true)]), None);
    }

    #[test]
    fn deterministic_first_and_failed_or_too_large_results_skipped() {
        let mut big = perf(0, M::CUDNN_FMA_MATH, true);
        big.memory = WORKSPACE_LIMIT + 1;
        let mut failed = perf(1, M::CUDNN_FMA_MATH, true);
        failed.status = 9;
        let r = [big, failed, perf(2, M::CUDNN_FMA_MATH, false), perf(3, M::CUDNN_FMA_MATH, true)];
        assert_eq!(pick::<Fwd>(&S, false, &r).map(|c| c.0), Some(Fwd::CUDNN_CONVOLUTION_FWD_ALGO_DIRECT));
        assert_eq!(pick::<Fwd>(&S, false, &r[..3]).map(|c| c.0), Some(Fwd::CUDNN_CONVOLUTION_FWD_ALGO_GEMM));
    }

    #[test]
    fn choose_asks_again_with_each_math_type_before_giving_up() {
        // The first query (tensor-op math) offers only Winograd; the second offers ALGO_1.
        let mut asked = 0;
        let c = choose::<Bd>(&S, true, 3, |i, n, got, out| {
            asked += 1;
            let r = if i == 0 {
                perf(4, M::CUDNN_TENSOR_OP_MATH, true)
            } else {
                perf(1, M::CUDNN_DEFAULT_MATH, true)
            };
            assert!(n >= 1);
            // SAFETY: `out` holds n ≥ 1 results.
            unsafe { *out = r };
            *got = 1;
            Ok(())
        })
        .unwrap();
        assert_eq!((c.0, asked), (Bd::CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, 2));
        let e = choose::<Bd>(&S, true, 3, |_, _, got, out| {
            // SAFETY: as above.
            unsafe { *out = perf(4, M::CUDNN_TENSOR_OP_MATH, true) };
            *got = 1;
            Ok(())
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("bf16 backward-data") && e.contains("--precision f32"), "{e}");
    }
}
