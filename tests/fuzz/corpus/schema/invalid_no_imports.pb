
í
imports.protot.impdep/base.protogoogle/protobuf/timestamp.proto"v
Uses 
base (2.t.base.BaseRbase 
kind (2.t.base.KindRkind*
at (2.google.protobuf.TimestampRat2$
S
Do.t.base.Base.t.imp.Usesbproto3