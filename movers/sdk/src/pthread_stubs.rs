//! Debian's wasi-libc (2022) lacks `pthread_detach` and `pthread_join`,
//! which libtest's harness links against. Test harnesses run single-threaded
//! on wasip1, so these are never called; they only satisfy the linker.
//! Compiled only when xtask sets `--cfg wasmover_pthread_stubs`.

const ENOTSUP: i32 = 58;

#[unsafe(no_mangle)]
extern "C" fn pthread_detach(_thread: usize) -> i32 {
    ENOTSUP
}

#[unsafe(no_mangle)]
extern "C" fn pthread_join(_thread: usize, _retval: *mut *mut u8) -> i32 {
    ENOTSUP
}
