//! Room for the tests whose bounds are timings of real processes.
//!
//! The cluster tests assert that a takeover, or writes after a lost NATS
//! server, come within seconds; those seconds are the NATS servers'
//! elections and the engines' lease, on a 2-core machine. A CPU-heavy test
//! beside them (a crash loop, the model, a browser) stretched a takeover
//! past its bound. So a test that starts a NATS cluster holds [`exclusive`]
//! (one at a time, nothing heavy beside it) and a CPU-heavy test holds
//! [`shared`] (any number together, none beside a cluster). The light
//! tests run beside anything. The guards are plain values (`Send`, unlike
//! a mutex guard) for async tests; waiting writers go first.

use std::sync::{Condvar, Mutex};

struct State {
    shared: usize,
    exclusive: bool,
    exclusive_waiting: usize,
}

static STATE: Mutex<State> = Mutex::new(State {
    shared: 0,
    exclusive: false,
    exclusive_waiting: 0,
});
static CHANGED: Condvar = Condvar::new();

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

fn wait(guard: std::sync::MutexGuard<'static, State>) -> std::sync::MutexGuard<'static, State> {
    CHANGED.wait(guard).unwrap_or_else(|e| e.into_inner())
}

/// Held by a test that starts a NATS cluster: alone among the heavy ones.
pub struct Exclusive(());

/// Held by a CPU-heavy test: never beside an [`Exclusive`] one.
pub struct Shared(());

pub fn exclusive() -> Exclusive {
    let mut s = state();
    s.exclusive_waiting += 1;
    while s.exclusive || s.shared > 0 {
        s = wait(s);
    }
    s.exclusive_waiting -= 1;
    s.exclusive = true;
    Exclusive(())
}

pub fn shared() -> Shared {
    let mut s = state();
    while s.exclusive || s.exclusive_waiting > 0 {
        s = wait(s);
    }
    s.shared += 1;
    Shared(())
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        state().exclusive = false;
        CHANGED.notify_all();
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        state().shared -= 1;
        CHANGED.notify_all();
    }
}

#[test]
fn an_exclusive_holder_waits_for_the_shared_ones_and_new_shared_ones_wait_for_it() {
    // proves the two rules: no shared holder beside an exclusive one, and a waiting exclusive goes first
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let first = shared();
    let held = Arc::new(AtomicBool::new(false));
    let writer = {
        let held = held.clone();
        std::thread::spawn(move || {
            let guard = exclusive();
            held.store(true, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(50));
            held.store(false, Ordering::SeqCst);
            drop(guard);
        })
    };
    while state().exclusive_waiting == 0 {
        std::thread::yield_now();
    }
    assert!(!held.load(Ordering::SeqCst), "not while a shared one holds");
    let reader = {
        let held = held.clone();
        std::thread::spawn(move || {
            let _guard = shared();
            assert!(
                !held.load(Ordering::SeqCst),
                "never beside the exclusive one"
            );
        })
    };
    drop(first);
    writer.join().unwrap();
    reader.join().unwrap();
}
