//! `channel`: the guest's framed messages to and from the peer.

use crate::bindings::channel::{self as wit, ChannelError};
use crate::channel::ChannelError as Error;
use crate::state::HostState;

impl From<Error> for ChannelError {
    fn from(e: Error) -> Self {
        match e {
            Error::Closed => ChannelError::Closed,
            Error::TooLarge { len, .. } => ChannelError::TooLarge(len),
            Error::Aborted(reason) => ChannelError::Aborted(reason),
            Error::Io(e) => ChannelError::Io(e.to_string()),
        }
    }
}

impl wit::Host for HostState {
    fn send(&mut self, message: Vec<u8>) -> wasmtime::Result<Result<(), ChannelError>> {
        self.host_call(|s| match &mut s.grants.channel {
            Some(channel) => channel.send_message(&message).map_err(Into::into),
            None => Err(ChannelError::Closed),
        })
    }

    fn abort(&mut self, reason: String) -> wasmtime::Result<()> {
        self.host_call(|s| {
            if let Some(channel) = &mut s.grants.channel {
                channel.abort(&reason);
            }
        })
    }

    fn receive(&mut self) -> wasmtime::Result<Result<Vec<u8>, ChannelError>> {
        self.host_call(|s| match &mut s.grants.channel {
            Some(channel) => channel
                .receive_message(s.limits.message_bytes)
                .map_err(Into::into),
            None => Err(ChannelError::Closed),
        })
    }
}
