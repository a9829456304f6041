import sys, collections
LEAF=[('kernel: context switch/futex/epoll',['finish_task_switch','futex','epoll','schedule','_raw_spin_unlock_irqrestore','try_to_wake_up']),
('kernel: network (tcp send/recv, softirq)',['tcp_','sock_','skb','softirq','__dev_queue','ip_','loopback','net_rx']),
('kernel: file io (write, fdatasync, ext4/jbd2, block)',['ext4','jbd2','iowrite16','blk_','file_write','vfs_write','fdatasync','filemap','copy_user','rep_movs_alternative','pwrite']),
('allocation (mimalloc)',['mi_','_mi_']),
('memcpy/memmove/memcmp',['memmove','memcpy','memcmp','memset']),
('crc/checksum',['crc32','crc']),
('sled internals',['sled::']),
('postcard/serde encode-decode',['postcard','serde']),
('prost encode/decode',['prost']),
('tokio runtime',['tokio::']),
]
frames=[];first=True;c=collections.Counter();total=0
def flush():
    global total
    total+=1
    for name,subs in LEAF:
        for f in frames[:4]:
            if any(s in f for s in subs):
                c[name]+=1; return
    c['other: '+(frames[0][:60] if frames else '?')]+=1
for line in open(sys.argv[1]):
    if not line.strip(): continue
    if not line.startswith('\t'):
        if not first: flush()
        first=False; frames=[]
    else:
        s=line.strip().split(' ',1)
        if len(s)>1: frames.append(s[1])
flush()
o=0
for k,v in c.most_common():
    if k.startswith('other'): o+=v; continue
    print(f'{100*v/total:5.1f}%  {k}')
print(f'{100*o/total:5.1f}%  other (spread)')
