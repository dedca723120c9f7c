

t.proto"
Tbproto3
s
a.protop"]
M
f (2TJ
M
f (2T7
M
f (2T$
M
f (2T
M
f (2Tbproto3