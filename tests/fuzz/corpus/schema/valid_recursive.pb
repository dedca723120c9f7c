
ð
recursive.protot.rec"ƒ
Node
name (	Rname'
children (2.t.rec.NodeRchildren#
parent (2.t.rec.NodeRparent0
by_name (2.t.rec.Node.ByNameEntryRbyName
tree (2.t.rec.TreeRtreeF
ByNameEntry
key (	Rkey!
value (2.t.rec.NodeRvalue:8"H
Tree
root (2.t.rec.NodeRroot
next (2.t.rec.TreeRnextbproto3