//! What every entity actor shares: reads by closure, and submitting a record
//! whose outcome comes back, in journal order, to `finish`.

use crate::domain::event::Record;
use crate::engine::commit::CommitQueue;
use crate::engine::error::{Error, Result};
use crate::store::writer::{Ack, JournalHandle};
use crate::store::StorageError;
use actix::prelude::*;
use tokio::sync::oneshot;

/// Runs a closure over an actor's state and answers its result: one message
/// type serves every read (views, pages, lists) without copying the state.
pub struct Read<S, R>(pub Box<dyn FnOnce(&S) -> R + Send>);

impl<S: 'static, R: 'static> Message for Read<S, R> {
    type Result = R;
}

impl<S, R> Read<S, R> {
    pub fn new(f: impl FnOnce(&S) -> R + Send + 'static) -> Self {
        Read(Box::new(f))
    }
}

/// An actor that journals its own decisions.
pub trait Journaled: Actor<Context = Context<Self>> {
    /// What to do once a record is durable (or failed): apply or drop the hold, reply.
    type Op: 'static;
    fn queue(&mut self) -> &mut CommitQueue<Self::Op>;
    fn journal(&self) -> &JournalHandle;
    fn finish(&mut self, op: Self::Op, ack: Ack, ctx: &mut Context<Self>);
    /// Called once the ops that just became ready are finished.
    fn finished(&mut self) {}
}

/// Submits `record`; `op` is finished once it is durable, after every op
/// this actor submitted before it. On refusal (queue full, storage failed),
/// gives `op` back with the error so the caller can drop its holds.
pub fn submit<A: Journaled>(
    act: &mut A,
    ctx: &mut Context<A>,
    record: Record,
    op: A::Op,
) -> Result<(), (A::Op, Error)> {
    match act.journal().submit(record) {
        Ok(rx) => {
            let ticket = act.queue().push(op);
            ctx.spawn(fut::wrap_future::<_, A>(rx).map(move |res, act, ctx| {
                let ack = res.unwrap_or(Err(StorageError::Closed));
                for (op, ack) in act.queue().resolve(ticket, ack) {
                    act.finish(op, ack, ctx);
                }
                act.finished();
            }));
            Ok(())
        }
        Err(e) => Err((op, e.into())),
    }
}

/// A reply channel and the future a handler returns for it.
pub fn reply_channel<T: Send + 'static>() -> (oneshot::Sender<Result<T>>, ResponseFuture<Result<T>>)
{
    let (tx, rx) = oneshot::channel();
    (
        tx,
        Box::pin(async move { rx.await.unwrap_or(Err(Error::ShuttingDown)) }),
    )
}

pub fn ready<T: Send + 'static>(value: Result<T>) -> ResponseFuture<Result<T>> {
    Box::pin(std::future::ready(value))
}

/// Maps a journal outcome to the engine's error.
pub fn acked(ack: &Ack) -> Result<()> {
    ack.as_ref().map(|_| ()).map_err(|e| Error::from(e.clone()))
}
