//! Running recursive work (parsing, AST walks, AST drops) on a thread whose
//! stack is large enough for hostile nesting.
//!
//! ruff's parser and AST visitor recurse once per nesting level; the default
//! 8 MiB main-thread stack overflows (aborting the process) somewhere in the
//! low thousands of levels. A dedicated thread with [`PARSE_STACK_BYTES`] of
//! stack handles the nesting any file within the size limit can reach after
//! [`crate::nesting`] has refused pathological depth.

/// Stack size for threads that parse untrusted scripts. Only touched pages
/// are committed, so reserving this much per worker costs address space, not
/// memory.
pub const PARSE_STACK_BYTES: usize = 256 * 1024 * 1024;

/// Runs `f` on a new thread with [`PARSE_STACK_BYTES`] of stack and returns
/// its result. A panic in `f` is resumed on the caller's thread.
pub fn with_large_stack<T, F>(f: F) -> T
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("scriptbox-parse".into())
            .stack_size(PARSE_STACK_BYTES)
            .spawn_scoped(scope, f)
            .expect("spawning a parser thread (out of memory or thread limit reached)");
        match handle.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
