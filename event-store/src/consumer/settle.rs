//! Telling JetStream what became of a message. Acks are fire-and-forget: a message is acked
//! only after its effect committed, so a lost ack costs one redelivery that the inbox
//! recognises as a duplicate, not a second effect; waiting for the server to confirm each
//! (`double_ack`) would add a round trip per message for nothing.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind};

/// Delay before a nak'd message (predecessor missing, transient failure) is redelivered.
pub(crate) const NAK_DELAY: Duration = Duration::from_secs(1);

pub(crate) async fn ack(message: &jetstream::Message) {
    if let Err(e) = message.ack().await {
        tracing::warn!(error = %e, "cannot acknowledge; the message will be redelivered");
    }
}

/// Hands the message back for redelivery after [`NAK_DELAY`].
pub(crate) async fn nak(message: &jetstream::Message) {
    if let Err(e) = message.ack_with(AckKind::Nak(Some(NAK_DELAY))).await {
        tracing::warn!(error = %e, "cannot nak; redelivery waits for ack_wait");
    }
}

/// Tells the server the message is still being worked on, so it is not redelivered yet.
pub(crate) async fn in_progress(message: &jetstream::Message) {
    let _ = message.ack_with(AckKind::Progress).await;
}
