//! The router's view of a storage node: the calls it makes. A trait so the retry
//! loop, the refresher and the status merge run against in-process fakes in tests.

use std::future::Future;
use std::time::Duration;

use ringkv_proto::v1::{
    AddNodeRequest, DecommissionNodeRequest, GetTimestampsRequest, GetTimestampsResponse, NodeStatusResponse,
    RingChangeResponse, ShardCountRequest, ShardCountResponse, ShardDeleteRangeRequest,
    ShardDeleteRangeResponse, ShardReadRequest, ShardReadResponse, ShardScanRequest, ShardScanResponse,
    ShardTxnCheckStatusRequest, ShardTxnCommitRequest, ShardTxnGcRequest, ShardTxnGcResponse,
    ShardTxnOnePcRequest, ShardTxnOnePcResponse, ShardTxnPrewriteRequest, ShardTxnPrewriteResponse,
    ShardTxnRollbackRequest, ShardTxnScanLocksRequest, ShardTxnScanLocksResponse, ShardTxnStatusResponse,
    ShardTxnValidateRequest, ShardTxnValidateResponse, ShardWriteRequest, ShardWriteResponse,
    TransferLeaderRequest, TransferLeaderResponse,
};
use tonic::Status;

/// The messages of a node's `ShardKv.Watch` stream.
pub type ShardWatchStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<ringkv_proto::v1::ShardWatchResponse, Status>> + Send>,
>;

/// Calls to the node at `addr` (`host:port`), each bounded by `timeout`.
pub trait NodeApi: Send + Sync + 'static {
    /// `ShardKv.Read`.
    fn read(
        &self,
        addr: &str,
        request: ShardReadRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<ShardReadResponse, Status>> + Send;

    /// `ShardKv.Write`.
    fn write(
        &self,
        addr: &str,
        request: ShardWriteRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<ShardWriteResponse, Status>> + Send;

    /// `ShardKv.Scan`.
    fn scan(
        &self,
        addr: &str,
        request: ShardScanRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<ShardScanResponse, Status>> + Send;

    /// `ShardKv.Count`.
    fn count(
        &self,
        addr: &str,
        request: ShardCountRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<ShardCountResponse, Status>> + Send;

    /// `ShardKv.DeleteRange`.
    fn delete_range(
        &self,
        addr: &str,
        request: ShardDeleteRangeRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<ShardDeleteRangeResponse, Status>> + Send;

    /// `Admin.HoldHistory` on one node. Fakes that never see a backup keep the default.
    fn hold_history(
        &self,
        addr: &str,
        request: ringkv_proto::v1::HoldHistoryRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<ringkv_proto::v1::HoldHistoryResponse, Status>> + Send {
        let _ = (addr, request, timeout);
        async { Err(Status::unimplemented("HoldHistory")) }
    }

    /// `Admin.NodeStatus`.
    fn node_status(
        &self,
        addr: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<NodeStatusResponse, Status>> + Send;

    /// `ShardKv.Watch`: opens the stream (within `timeout`); the stream itself has no
    /// deadline.
    fn watch(
        &self,
        addr: &str,
        request: ringkv_proto::v1::ShardWatchRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<ShardWatchStream, Status>> + Send {
        let _ = (addr, request, timeout);
        async { Err(Status::unimplemented("watch is not supported by this node api")) }
    }

    /// `Admin.GetAuth`: the permission table as the node applied it.
    fn get_auth(
        &self,
        addr: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<ringkv_proto::v1::GetAuthResponse, Status>> + Send {
        let _ = (addr, timeout);
        async {
            Err(Status::unimplemented(
                "permissions are not supported by this node api",
            ))
        }
    }

    /// `Admin.ChangeAuth` at a node (which commits it in the system group).
    fn change_auth(
        &self,
        addr: &str,
        request: ringkv_proto::v1::ChangeAuthRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<ringkv_proto::v1::ChangeAuthResponse, Status>> + Send {
        let _ = (addr, request, timeout);
        async {
            Err(Status::unimplemented(
                "permissions are not supported by this node api",
            ))
        }
    }

    /// `Auth.Login` at a node (which checks the password and signs the token), for a client
    /// at `client` (the node counts failed logins per client address).
    fn login(
        &self,
        addr: &str,
        request: ringkv_proto::v1::LoginRequest,
        client: Option<std::net::IpAddr>,
        timeout: Duration,
    ) -> impl Future<Output = Result<ringkv_proto::v1::LoginResponse, Status>> + Send {
        let _ = (addr, request, client, timeout);
        async {
            Err(Status::unimplemented(
                "password logins are not supported by this node api",
            ))
        }
    }

    /// `Auth.ChangePassword` at a node (which checks the old password and commits the new
    /// one's hash), for a client at `client`.
    fn change_password(
        &self,
        addr: &str,
        request: ringkv_proto::v1::ChangePasswordRequest,
        client: Option<std::net::IpAddr>,
        timeout: Duration,
    ) -> impl Future<Output = Result<ringkv_proto::v1::ChangePasswordResponse, Status>> + Send {
        let _ = (addr, request, client, timeout);
        async {
            Err(Status::unimplemented(
                "password changes are not supported by this node api",
            ))
        }
    }

    /// `Admin.AddNode` / `Admin.DecommissionNode` at a node (which forwards the ring change
    /// to the system leader).
    fn change_ring(
        &self,
        addr: &str,
        change: RingChangeRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<RingChangeResponse, Status>> + Send {
        let _ = (addr, change, timeout);
        async {
            Err(Status::unimplemented(
                "ring changes are not supported by this node api",
            ))
        }
    }

    /// `Tso.GetTimestamps` at the node believed to lead the system group.
    fn timestamps(
        &self,
        addr: &str,
        request: GetTimestampsRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<GetTimestampsResponse, Status>> + Send {
        let _ = (addr, request, timeout);
        async {
            Err(Status::unimplemented(
                "timestamps are not supported by this node api",
            ))
        }
    }

    /// `ShardKv.TxnPrewrite` / `TxnCommit` / `TxnRollback` / `TxnCheckStatus` / `TxnValidate`.
    fn txn(
        &self,
        addr: &str,
        call: TxnCall,
        timeout: Duration,
    ) -> impl Future<Output = Result<TxnReply, Status>> + Send {
        let _ = (addr, call, timeout);
        async {
            Err(Status::unimplemented(
                "transactions are not supported by this node api",
            ))
        }
    }

    /// `Admin.TransferLeader` at the shard's leader.
    fn transfer_leader(
        &self,
        addr: &str,
        request: TransferLeaderRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<TransferLeaderResponse, Status>> + Send {
        let _ = (addr, request, timeout);
        async {
            Err(Status::unimplemented(
                "leader transfer is not supported by this node api",
            ))
        }
    }
}

/// A transaction command a router sends to a shard's leader (`ShardKv.Txn*`).
#[derive(Debug, Clone, PartialEq)]
pub enum TxnCall {
    Prewrite(ShardTxnPrewriteRequest),
    Commit(ShardTxnCommitRequest),
    Rollback(ShardTxnRollbackRequest),
    CheckStatus(ShardTxnCheckStatusRequest),
    Validate(ShardTxnValidateRequest),
    Gc(ShardTxnGcRequest),
    ScanLocks(ShardTxnScanLocksRequest),
    OnePc(ShardTxnOnePcRequest),
}

impl TxnCall {
    /// The shard the command is for.
    pub fn shard_id(&self) -> u32 {
        match self {
            TxnCall::Prewrite(request) => request.shard_id,
            TxnCall::Commit(request) => request.shard_id,
            TxnCall::Rollback(request) => request.shard_id,
            TxnCall::CheckStatus(request) => request.shard_id,
            TxnCall::Validate(request) => request.shard_id,
            TxnCall::Gc(request) => request.shard_id,
            TxnCall::ScanLocks(request) => request.shard_id,
            TxnCall::OnePc(request) => request.shard_id,
        }
    }
}

/// A node's answer to a [`TxnCall`].
#[derive(Debug, Clone, PartialEq)]
pub enum TxnReply {
    Prewrite(ShardTxnPrewriteResponse),
    Status(ShardTxnStatusResponse),
    Validate(ShardTxnValidateResponse),
    Gc(ShardTxnGcResponse),
    ScanLocks(ShardTxnScanLocksResponse),
    OnePc(ShardTxnOnePcResponse),
}

/// A ring change a router forwards to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingChangeRequest {
    Add(AddNodeRequest),
    Decommission(DecommissionNodeRequest),
}
