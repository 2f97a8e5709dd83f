package telemetry

import (
	"bufio"
	"math"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
)

// TextFamilySource is a FamilySource that can also write a family
// straight in Prometheus' text format (version 0.0.4) — the bytes
// expfmt's text encoder writes for what Family returns — without building
// it: a family of a sidecar in a large mesh is tens of thousands of
// series, and their dto messages are megabytes for each scrape.
//
// WriteFamilyText writes the named family to w and reports whether it
// wrote anything (false, as Family's nil, when the family has no
// metric). Errors are w's, seen when it is flushed.
type TextFamilySource interface {
	FamilySource
	WriteFamilyText(w *bufio.Writer, name string) bool
}

// The helpers below write what expfmt.MetricFamilyToText writes, for
// metric and label names that are valid in the legacy (pre-UTF-8)
// sense, as every name Weft exports is.

// WriteTextHeader writes a family's HELP and TYPE lines.
func WriteTextHeader(w *bufio.Writer, name, help string, typ dto.MetricType) {
	w.WriteString("# HELP ")
	w.WriteString(name)
	w.WriteByte(' ')
	helpEscaper.WriteString(w, help)
	w.WriteString("\n# TYPE ")
	w.WriteString(name)
	switch typ {
	case dto.MetricType_COUNTER:
		w.WriteString(" counter\n")
	case dto.MetricType_GAUGE:
		w.WriteString(" gauge\n")
	case dto.MetricType_HISTOGRAM:
		w.WriteString(" histogram\n")
	case dto.MetricType_SUMMARY:
		w.WriteString(" summary\n")
	default:
		w.WriteString(" untyped\n")
	}
}

// WriteTextSample writes one sample line: name+suffix, the labels (and
// le when withLE, as a histogram bucket's), the value.
func WriteTextSample(w *bufio.Writer, name, suffix string, labels []*dto.LabelPair, withLE bool, le, v float64) {
	w.WriteString(name)
	w.WriteString(suffix)
	if len(labels) > 0 || withLE {
		sep := byte('{')
		for _, lp := range labels {
			w.WriteByte(sep)
			w.WriteString(lp.GetName())
			w.WriteString(`="`)
			valueEscaper.WriteString(w, lp.GetValue())
			w.WriteByte('"')
			sep = ','
		}
		if withLE {
			w.WriteByte(sep)
			w.WriteString(`le="`)
			writeTextFloat(w, le)
			w.WriteByte('"')
		}
		w.WriteByte('}')
	}
	w.WriteByte(' ')
	writeTextFloat(w, v)
	w.WriteByte('\n')
}

// WriteTextHistogram writes a histogram's samples: its buckets, a +Inf
// bucket when it has none, its sum and its count.
func WriteTextHistogram(w *bufio.Writer, name string, labels []*dto.LabelPair, h *dto.Histogram) {
	inf := false
	for _, b := range h.GetBucket() {
		v := b.GetCumulativeCountFloat()
		if v == 0 {
			v = float64(b.GetCumulativeCount())
		}
		WriteTextSample(w, name, "_bucket", labels, true, b.GetUpperBound(), v)
		if math.IsInf(b.GetUpperBound(), +1) {
			inf = true
		}
	}
	count := h.GetSampleCountFloat()
	if count == 0 {
		count = float64(h.GetSampleCount())
	}
	if !inf {
		WriteTextSample(w, name, "_bucket", labels, true, math.Inf(+1), count)
	}
	WriteTextSample(w, name, "_sum", labels, false, 0, h.GetSampleSum())
	WriteTextSample(w, name, "_count", labels, false, 0, count)
}

var (
	helpEscaper  = strings.NewReplacer("\\", `\\`, "\n", `\n`)
	valueEscaper = strings.NewReplacer("\\", `\\`, "\n", `\n`, "\"", `\"`)
)

// writeTextFloat writes f as expfmt does.
func writeTextFloat(w *bufio.Writer, f float64) {
	switch {
	case f == 1:
		w.WriteByte('1')
	case f == 0:
		w.WriteByte('0')
	case f == -1:
		w.WriteString("-1")
	case math.IsNaN(f):
		w.WriteString("NaN")
	case math.IsInf(f, +1):
		w.WriteString("+Inf")
	case math.IsInf(f, -1):
		w.WriteString("-Inf")
	default:
		w.Write(strconv.AppendFloat(w.AvailableBuffer(), f, 'g', -1, 64))
	}
}
