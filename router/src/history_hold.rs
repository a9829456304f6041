//! `Admin.HoldHistory` at a router: the hold goes to every node of the ring that may serve
//! a shard (joining, active, decommissioning), so a read at the held timestamp finds its
//! versions on whichever replica leads when it arrives. Nodes declared dead or removed are
//! skipped. The answer counts the nodes that took it; any that did not fail the call, naming
//! them (the caller — a backup — retries or gives up; a hold taken by the others lapses by
//! itself).

use futures::{stream, StreamExt};
use ringkv_proto::v1::{HoldHistoryRequest, HoldHistoryResponse};
use ringkv_ring::MemberState;
use tokio::time::Instant;
use tonic::Code;

use crate::context::RouterContext;
use crate::error::RouterError;
use crate::node_api::NodeApi;

/// Sends `request` to every node that may serve a shard, at most `max_fanout` at once.
pub(crate) async fn hold_on_every_node<N: NodeApi>(
    ctx: &RouterContext<N>,
    request: HoldHistoryRequest,
    deadline: Instant,
) -> Result<HoldHistoryResponse, RouterError> {
    let view = ctx.topology.wait_for_ring(deadline).await?;
    let members: Vec<_> = view
        .ring
        .members()
        .filter(|member| {
            matches!(
                member.state,
                MemberState::Joining | MemberState::Active | MemberState::Decommissioning
            )
        })
        .cloned()
        .collect();
    let answers: Vec<_> = stream::iter(members)
        .map(|member| async move {
            let timeout = ctx
                .rpc_timeout
                .min(deadline.saturating_duration_since(Instant::now()));
            let answer = ctx.nodes.hold_history(&member.addr, request, timeout).await;
            (member, answer)
        })
        .buffer_unordered(ctx.max_fanout)
        .collect()
        .await;
    let mut taken = 0;
    let mut failed = Vec::new();
    for (member, answer) in answers {
        match answer {
            Ok(_) => taken += 1,
            // A bad hold (no id, too long, too many) is the same everywhere.
            Err(status) if status.code() == Code::InvalidArgument => {
                return Err(RouterError::InvalidArgument(status.message().to_string()))
            }
            Err(status) => failed.push(format!(
                "node {} ({}): {:?}: {}",
                member.node_id,
                member.addr,
                status.code(),
                crate::error::clip(status.message())
            )),
        }
    }
    if failed.is_empty() {
        Ok(HoldHistoryResponse { nodes: taken })
    } else {
        failed.sort();
        Err(RouterError::Unavailable(format!(
            "the history hold was not taken by {} of {} nodes: {}",
            failed.len(),
            failed.len() + taken as usize,
            failed.join("; ")
        )))
    }
}
