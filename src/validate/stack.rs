//! Running recursive work (parsing, AST walks, AST drops) on a thread whose
//! stack is large enough for hostile nesting.
//!
//! ruff's parser and AST visitor recurse once per nesting level; the default
//! 8 MiB main-thread stack overflows (aborting the process) somewhere in the
//! low thousands of levels. A thread with [`PARSE_STACK_BYTES`] of stack
//! handles the nesting any accepted file can reach, because
//! [`crate::validate::nesting`] refuses anything deeper than
//! [`crate::validate::nesting::MAX_NESTING`] levels first.

use std::cell::Cell;

/// Stack size for threads that parse untrusted scripts: 3 million nesting
/// levels were measured to fit. Only touched pages are committed, so
/// reserving this much per worker costs address space, not memory.
pub const PARSE_STACK_BYTES: usize = 256 * 1024 * 1024;

thread_local! {
    static LARGE_STACK: Cell<bool> = const { Cell::new(false) };
}

/// Declares that the current thread was created with [`PARSE_STACK_BYTES`]
/// of stack (e.g. from a thread pool's start handler), so
/// [`with_large_stack`] can run work on it directly.
pub fn mark_current_thread_large() {
    LARGE_STACK.with(|flag| flag.set(true));
}

/// Runs `f` with [`PARSE_STACK_BYTES`] of stack: directly when the current
/// thread has that much, else on a new scoped thread. A panic in `f` is
/// resumed on the caller's thread.
pub fn with_large_stack<T, F>(f: F) -> T
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    if LARGE_STACK.with(Cell::get) {
        return f();
    }
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("scriptbox-parse".into())
            .stack_size(PARSE_STACK_BYTES)
            .spawn_scoped(scope, || {
                mark_current_thread_large();
                f()
            })
            .expect("spawning a parser thread (out of memory or thread limit reached)");
        match handle.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
