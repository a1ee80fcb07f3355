//! Helpers for the tests that run the `edgefront` binary.

use std::process::Child;

/// A child process killed (and reaped) when the test ends, pass or fail.
pub(crate) struct KillOnDrop(pub(crate) Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
