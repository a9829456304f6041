import sys, collections
# Attribute each perf sample to the first matching category, scanning frames leaf→root for
# "leaf" categories and root→leaf for "owner" categories.
router_pids=set(sys.argv[2].split(',')) if len(sys.argv)>2 else set()
OWNER=[ # (name, substrings) checked from the root towards the leaf: the outermost match wins
 ('node: apply (state machine, sled writes)', ['state_machine::apply::','StateMachine as openraft::storage::v2::RaftStateMachine']),
 ('node: log engine (append, fsync)', ['raft::log_store','raft::flusher','wal::','log_engine']),
 ('node: txn/kv service handlers', ['service::txn','service::shard_kv','service::kv','ShardKv','node::txn']),
 ('node: raft network (send/recv AppendEntries)', ['raft::network','service::raft','RaftService']),
 ('openraft core', ['openraft::']),
 ('sled background (flusher, io)', ['sled::']),
 ('gRPC/HTTP2 (tonic/hyper/h2)', ['tonic::','hyper::','h2::','tower::']),
 ('tso', ['tso::']),
]
def strip(s):
    out=[];d=0
    if s.startswith('<'):
        # "<Type as Trait>::method": keep the type and trait, strip their generics
        depth=0
        for i,ch in enumerate(s):
            depth+= (ch=='<') - (ch=='>')
            if depth==0:
                return strip(s[1:i]) + strip(s[i+1:])
    for ch in s:
        if ch=='<': d+=1; continue
        if ch=='>' and d>0: d-=1; continue
        if d==0: out.append(ch)
    return ''.join(out)
def classify(frames,pid):
    syms=[f for f in frames]
    joined=syms
    for name,subs in OWNER:
        for s in reversed(joined):
            if any(x in s for x in subs):
                return name
    leaf=syms[0] if syms else ''
    if any(k in ' '.join(syms[:8]) for k in ['schedule','futex','epoll','park']): return 'scheduler/park/wake (kernel+tokio)'
    return 'other'
counts=collections.Counter(); per=collections.Counter(); total=0
frames=[];pid=None
def flush():
    global total
    if pid is None: return
    who='router' if pid in router_pids else 'node'
    c=classify(frames,pid)
    if who=='router': c='router: '+( 'gRPC' if 'gRPC' in c else c)
    counts[c]+=1; per[who]+=1; total+=1
for line in open(sys.argv[1]):
    if not line.strip():
        continue
    if not line.startswith('\t') and not line.startswith(' '):
        flush(); parts=line.split(); pid=parts[-1] if parts[-1].isdigit() else parts[1]; frames=[]
    else:
        s=line.strip().split(' ',1)
        if len(s)>1: frames.append(strip(s[1]))
flush()
print('samples',total, dict(per))
for k,v in counts.most_common(): print(f'{100*v/total:5.1f}%  {k}')
