//! Run-time instruction-set dispatch for the kernel's own loops.
//!
//! The crate is compiled for baseline x86-64 so the binary runs anywhere, which limits
//! auto-vectorised loops to 128-bit SSE2. [`multiversion!`](crate::multiversion) compiles a function body (and every
//! `#[inline(always)]` helper it calls) a second and third time with AVX-512 and AVX2+FMA enabled
//! and picks the best one the CPU supports when it is called. Dispatch costs one cached check per
//! call, so it wraps per-block or per-query work, never per-element work.

/// Defines `fn $name(args) -> ret` that runs `$body_fn(args)` compiled for the best available ISA.
/// `$body_fn` must be `#[inline(always)]` so that it is compiled inside each variant. Exported for
/// the other numeric loops of the workspace (the embedding model's element-wise functions).
#[macro_export]
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty => $body_fn:path) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn v4($($arg: $ty),*) -> $ret {
                    $body_fn($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn v3($($arg: $ty),*) -> $ret {
                    $body_fn($($arg),*)
                }
                if $crate::isa::has_avx512() {
                    // SAFETY: the CPU supports every feature `v4` is compiled for (checked above).
                    return unsafe { v4($($arg),*) };
                }
                if $crate::isa::has_avx2() {
                    // SAFETY: as above, for AVX2 and FMA.
                    return unsafe { v3($($arg),*) };
                }
            }
            $body_fn($($arg),*)
        }
    };
}

/// AVX-512 F/DQ/VL, AVX2 and FMA are all present.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512dq")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && has_avx2()
}

/// AVX2 and FMA are present.
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}
