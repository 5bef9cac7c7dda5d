//! SIGTERM/SIGINT handling for running as PID 1.
//!
//! The kernel does not apply default signal actions to PID 1 of a PID
//! namespace, so in a `FROM scratch` container (no init) SIGTERM is ignored
//! unless the process installs a handler; `docker stop` would then wait for
//! its timeout and SIGKILL. Installing a handler needs libc's FFI, hence the
//! `unsafe` allowed in this module only.
#![allow(unsafe_code)]

extern "C" fn exit_now(_signal: libc::c_int) {
    // SAFETY: `_exit` is async-signal-safe; nothing else is done here.
    unsafe { libc::_exit(0) }
}

/// Makes SIGTERM and SIGINT end the process at once with exit code 0.
pub fn install() {
    let handler = exit_now as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only calls the async-signal-safe `_exit`.
        let previous = unsafe { libc::signal(signal, handler) };
        if previous == libc::SIG_ERR {
            eprintln!("test-engine: cannot install handler for signal {signal}");
        }
    }
}
