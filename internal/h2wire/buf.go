package h2wire

import "sync"

// DataBufSize is the capacity of the buffers DataBuf hands out: a DATA
// frame's payload at the default SETTINGS_MAX_FRAME_SIZE.
const DataBufSize = 16 << 10

var dataBufs = sync.Pool{New: func() any { b := make([]byte, 0, DataBufSize); return &b }}

// DataBuf returns an empty buffer for a stream's received DATA from a
// pool the connections share, so that a body waiting to be read costs no
// allocation of its own. The owner keeps the pointer, stores the buffer
// as it grew in it, and gives it back with PutDataBuf.
func DataBuf() *[]byte {
	bp := dataBufs.Get().(*[]byte)
	*bp = (*bp)[:0]
	return bp
}

// PutDataBuf gives a buffer from DataBuf back (nil: none); one grown past
// four frames is dropped.
func PutDataBuf(bp *[]byte) {
	if bp == nil || cap(*bp) > 4*DataBufSize {
		return
	}
	dataBufs.Put(bp)
}
