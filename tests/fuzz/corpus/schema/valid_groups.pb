
¢
groups.protot.groups"æ
Old,
result (
2.t.groups.Old.ResultRresult&
item (
2.t.groups.Old.ItemRitem
must (Rmust
plain (Rplain.
Result
url (	Rurl
rank (Rrank(
Item
id (Rid
p (BRp*dÉ:
ext.t.groups.Oldd (	Rext