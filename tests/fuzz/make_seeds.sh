#!/bin/sh
# Writes the fuzz targets' seed corpora (tests/fuzz/corpus/*/seed-*) from
# the real tools: valid batches of devices 2 to 5 (each its own, so every
# one reaches the apply path whatever order the corpus is read in) and HTTP
# requests carrying the token fuzz_http.c enrols for device 1. Run from the repository root after a build:
#   tests/fuzz/make_seeds.sh build
set -eu
B=${1:-build}
C=tests/fuzz/corpus
S=$B/tools/shahidi
DEV=0000000000000001
TOKEN=shd_fuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuz
mkdir -p $C/push $C/http $C/merge
# push: devices 2 to 5, one batch each (device 1 is the regression input's)
$S sample --device 0000000000000002 --count 2 --seed 1 --out $C/push/seed-deflate
$S sample --device 0000000000000003 --count 2 --seed 2 --encoding gzip --out $C/push/seed-gzip
$S sample --device 0000000000000004 --count 1 --seed 3 --encoding none --out $C/push/seed-plain
$S sample --device 0000000000000005 --count 8 --seed 4 --batch-seq 7 --first-change 40 \
	--out $C/push/seed-device5-batch7
req() { printf '%b' "$1" >"$C/http/$2"; }
req 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n' seed-healthz
req "GET /v1/forms HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $TOKEN\r\nAccept-Encoding: gzip\r\n\r\n" seed-forms
req "GET /v1/pull?cursor=0&limit=5 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer $TOKEN\r\n\r\n" seed-pull
req 'GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n' seed-pipelined
req 'POST /v1/push HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n' seed-chunked
{
	printf 'POST /v1/push HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n' "$TOKEN"
	$S sample --device $DEV --count 2 --seed 1 --out $B/seed-http-push.z
	printf 'Content-Encoding: deflate\r\nContent-Length: %d\r\n\r\n' "$(wc -c <$B/seed-http-push.z)"
	cat $B/seed-http-push.z
} >$C/http/seed-push
# merge: 6 bytes a write (device, field, stamp, value, bases, deleted)
printf '\001\001\020\101\000\000\002\001\021\102\001\000\003\001\021\103\001\000' >$C/merge/seed-conflict
printf '\001\000\020\000\000\001\002\002\030\105\000\000\001\000\040\000\001\000' >$C/merge/seed-delete
printf '\001\001\020\101\000\000\001\001\020\102\000\000\004\003\377\377\377\001' >$C/merge/seed-ties
