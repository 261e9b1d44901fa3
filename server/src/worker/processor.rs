//! What a worker does with an item: the [`Processor`] trait, and the built-in demo.

use std::time::Duration;

use batchwatch_core::{ItemProgress, source::BoxFuture};

/// The work done on one item. `Err` carries the message a person will see.
pub trait Processor: Send + Sync + 'static {
    fn process<'a>(&'a self, item: &'a ItemProgress, attempt: u32) -> BoxFuture<'a, Result<(), String>>;
}

/// The built-in demo: takes a while per item and fails a share of attempts.
#[derive(Debug, Clone)]
pub struct Demo {
    pub delay: Duration,
    pub failure_rate: f64,
}

impl Processor for Demo {
    fn process<'a>(&'a self, item: &'a ItemProgress, attempt: u32) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            tokio::time::sleep(self.delay.mul_f64(0.5 + fastrand::f64())).await;
            if fastrand::f64() < self.failure_rate {
                Err(format!("could not process {} (attempt {attempt})", item.name))
            } else {
                Ok(())
            }
        })
    }
}
