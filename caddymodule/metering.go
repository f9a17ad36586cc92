package caddymodule

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/llmspend/llmspend/spend"
)

// maxMeteredJSON bounds how much of a non-streaming response is held to
// read its usage. Usage sits at the end of OpenAI and Anthropic bodies, so
// a response is buffered whole (that is also what lets the cost go in a
// header); a body past this size is forwarded as it comes and not billed
// (logged), rather than held in memory without bound.
const maxMeteredJSON = 16 << 20

// meterMode is what the writer does with the body.
type meterMode uint8

const (
	modeUndecided meterMode = iota
	modePass                // upstream error or not metered: forward untouched
	modeJSON                // buffer, extract usage, then write with the cost header
	modeSSE                 // forward event by event while metering
)

// meteringWriter sits between reverse_proxy and the client. It decides at
// WriteHeader what the response is: an upstream error (passed through, not
// billed), an SSE stream (forwarded one event at a time, flushed after
// each, usage read on the way) or a JSON body (held until complete so the
// usage can be read and x-litellm-response-cost set).
type meteringWriter struct {
	caddyhttp.ResponseWriterWrapper
	format spend.Format
	strip  bool
	prompt int64

	mode        meterMode
	status      int
	wroteHeader bool
	buf         *bytes.Buffer
	overflow    bool
	meter       *spend.StreamMeter
	rc          *http.ResponseController
	emitFn      func([]byte) error
}

var meteringWriterPool = sync.Pool{New: func() any { return new(meteringWriter) }}

func newMeteringWriter(w http.ResponseWriter, f spend.Format, strip bool, prompt int64) *meteringWriter {
	mw := meteringWriterPool.Get().(*meteringWriter)
	*mw = meteringWriter{ResponseWriterWrapper: caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, format: f, strip: strip, prompt: prompt}
	return mw
}

func (mw *meteringWriter) release() {
	if mw.buf != nil && mw.buf.Cap() <= 1<<20 {
		bodyPool.Put(mw.buf)
	}
	*mw = meteringWriter{}
	meteringWriterPool.Put(mw)
}

func (mw *meteringWriter) WriteHeader(status int) {
	if mw.wroteHeader {
		return
	}
	// 1xx informational responses go straight through.
	if status >= 100 && status < 200 {
		mw.ResponseWriter.WriteHeader(status)
		return
	}
	mw.wroteHeader = true
	mw.status = status
	h := mw.Header()
	switch {
	case status < 200 || status > 299:
		mw.mode = modePass
	case strings.HasPrefix(h.Get("Content-Type"), "text/event-stream"):
		mw.mode = modeSSE
		mw.meter = spend.NewStreamMeter(mw.format, mw.strip, mw.prompt)
		if mw.strip {
			// Dropping the usage chunk changes the length.
			h.Del("Content-Length")
		}
		// Caddy's writers flush through Unwrap, not the http.Flusher interface.
		mw.rc = http.NewResponseController(mw.ResponseWriter)
		mw.emitFn = mw.emit
	default:
		mw.mode = modeJSON
		mw.buf = bodyPool.Get().(*bytes.Buffer)
		mw.buf.Reset()
		return // headers go out with the body, once the cost is known
	}
	mw.ResponseWriter.WriteHeader(status)
}

func (mw *meteringWriter) Write(p []byte) (int, error) {
	if !mw.wroteHeader {
		mw.WriteHeader(http.StatusOK)
	}
	switch mw.mode {
	case modeSSE:
		// Metering goes on even if the client has gone: what the upstream
		// produced is billed.
		if err := mw.meter.Write(p, mw.emitFn); err != nil {
			return len(p), nil
		}
		return len(p), nil
	case modeJSON:
		if mw.overflow {
			return mw.ResponseWriter.Write(p)
		}
		if mw.buf.Len()+len(p) > maxMeteredJSON {
			// Too big to hold: flush what we have and stop metering.
			mw.overflow = true
			mw.ResponseWriter.WriteHeader(mw.status)
			if _, err := mw.ResponseWriter.Write(mw.buf.Bytes()); err != nil {
				return 0, err
			}
			return mw.ResponseWriter.Write(p)
		}
		return mw.buf.Write(p)
	default:
		return mw.ResponseWriter.Write(p)
	}
}

// emit forwards one SSE event and flushes it, so the client sees each event
// as soon as the upstream sends it.
func (mw *meteringWriter) emit(ev []byte) error {
	if _, err := mw.ResponseWriter.Write(ev); err != nil {
		return err
	}
	return mw.rc.Flush()
}

// Flush is a no-op while a JSON body is being held; reverse_proxy flushes
// streams itself and the SSE path flushes per event.
func (mw *meteringWriter) Flush() {
	if mw.mode == modeJSON && !mw.overflow {
		return
	}
	_ = http.NewResponseController(mw.ResponseWriter).Flush()
}

// finish completes the response and returns the usage to bill. ok is false
// when nothing is to be billed (upstream error, no usage, overflow).
func (mw *meteringWriter) finish(costHeader func(spend.Usage) string) (u spend.Usage, ok bool) {
	switch mw.mode {
	case modeSSE:
		_ = mw.meter.Finish(mw.emitFn)
		return mw.meter.Result(), true
	case modeJSON:
		if mw.overflow {
			return u, false
		}
		body := mw.buf.Bytes()
		u, ok = extractMaybeGzip(mw.format, mw.Header().Get("Content-Encoding"), body)
		if ok {
			mw.Header().Set("x-litellm-response-cost", costHeader(u))
		}
		mw.ResponseWriter.WriteHeader(mw.status)
		_, _ = mw.ResponseWriter.Write(body)
		return u, ok
	}
	return u, false
}

var gzipReaders sync.Pool

// extractMaybeGzip reads usage from a JSON body, decompressing a gzip copy
// when the upstream compressed it (the client still gets the original bytes).
func extractMaybeGzip(f spend.Format, encoding string, body []byte) (spend.Usage, bool) {
	if !strings.EqualFold(strings.TrimSpace(encoding), "gzip") {
		return spend.ExtractJSON(f, body)
	}
	var zr *gzip.Reader
	if v := gzipReaders.Get(); v != nil {
		zr = v.(*gzip.Reader)
		if err := zr.Reset(bytes.NewReader(body)); err != nil {
			return spend.Usage{}, false
		}
	} else {
		var err error
		if zr, err = gzip.NewReader(bytes.NewReader(body)); err != nil {
			return spend.Usage{}, false
		}
	}
	defer gzipReaders.Put(zr)
	plain := bodyPool.Get().(*bytes.Buffer)
	plain.Reset()
	defer bodyPool.Put(plain)
	if _, err := plain.ReadFrom(io.LimitReader(zr, maxMeteredJSON)); err != nil {
		return spend.Usage{}, false
	}
	return spend.ExtractJSON(f, plain.Bytes())
}
