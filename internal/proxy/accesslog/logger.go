package accesslog

import (
	"fmt"
	"weft.dev/weft/internal/proxy/xdswire"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
)

// FileAccessLogName is Envoy's name of the file access logger.
const FileAccessLogName = "envoy.access_loggers.file"

// reqWithoutQueryFormatter is the formatter extension Istio adds for
// %REQ_WITHOUT_QUERY%; Weft's proxy renders that operator natively.
const reqWithoutQueryFormatter = "envoy.formatter.req_without_query"

// Logger is one access_log entry of a connection manager: its filter,
// format and sink. Immutable.
type Logger struct {
	filter *Filter
	format *Format
	sink   *Sink
}

// NewLogger is a Logger writing format to sink for the requests filter
// matches (nil: all).
func NewLogger(filter *Filter, format *Format, sink *Sink) *Logger {
	return &Logger{filter: filter, format: format, sink: sink}
}

// Log renders e and queues it on the sink when the filter matches. It
// never blocks: a full queue drops the line (and counts it). Called on
// request goroutines.
func (l *Logger) Log(e *Entry) {
	if !l.filter.Match(e) {
		return
	}
	b := linePool.Get().(*[]byte)
	*b = l.format.Append((*b)[:0], e)
	l.sink.write(b)
}

// Parse translates an access_log entry of an HttpConnectionManager,
// opening its sink from sinks. Only envoy.access_loggers.file is
// supported. Errors name the field that is wrong, relative to the entry.
func Parse(al *accesslogv3.AccessLog, sinks *Sinks) (*Logger, error) {
	fl, err := fileConfig(al)
	if err != nil {
		return nil, err
	}
	format, err := FileFormat(fl)
	if err != nil {
		return nil, fmt.Errorf("typed_config.%w", err)
	}
	filter, err := ParseFilter(al.GetFilter())
	if err != nil {
		return nil, fmt.Errorf("filter.%w", err)
	}
	if fl.GetPath() == "" {
		return nil, fmt.Errorf("typed_config.path: empty")
	}
	sink, err := sinks.Open(fl.GetPath())
	if err != nil {
		return nil, fmt.Errorf("typed_config.path: %w", err)
	}
	return NewLogger(filter, format, sink), nil
}

func fileConfig(al *accesslogv3.AccessLog) (*filev3.FileAccessLog, error) {
	tc := al.GetTypedConfig()
	if tc == nil {
		return nil, fmt.Errorf("typed_config: missing")
	}
	if !tc.MessageIs((*filev3.FileAccessLog)(nil)) {
		return nil, fmt.Errorf("typed_config: %s (%s) is not supported: Weft's proxy implements %s only", al.GetName(), tc.GetTypeUrl(), FileAccessLogName)
	}
	var fl filev3.FileAccessLog
	if err := xdswire.UnmarshalAny(tc, &fl); err != nil {
		return nil, fmt.Errorf("typed_config: %w", err)
	}
	return &fl, nil
}

// FileFormat compiles the format of a FileAccessLog: Envoy's default
// format when it has none. Errors name the field.
func FileFormat(fl *filev3.FileAccessLog) (*Format, error) {
	switch f := fl.GetAccessLogFormat().(type) {
	case nil:
		return ParseText("")
	case *filev3.FileAccessLog_Format:
		return wrap("format", f.Format, ParseText)
	case *filev3.FileAccessLog_JsonFormat:
		fm, err := ParseJSON(f.JsonFormat)
		if err != nil {
			return nil, fmt.Errorf("json_format: %w", err)
		}
		return fm, nil
	case *filev3.FileAccessLog_TypedJsonFormat:
		fm, err := ParseJSON(f.TypedJsonFormat)
		if err != nil {
			return nil, fmt.Errorf("typed_json_format: %w", err)
		}
		return fm, nil
	case *filev3.FileAccessLog_LogFormat:
		fm, err := SubstitutionFormat(f.LogFormat)
		if err != nil {
			return nil, fmt.Errorf("log_format.%w", err)
		}
		return fm, nil
	}
	return nil, fmt.Errorf("access_log_format: unsupported")
}

func wrap(field, s string, parse func(string) (*Format, error)) (*Format, error) {
	f, err := parse(s)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	return f, nil
}

// SubstitutionFormat compiles a SubstitutionFormatString (text_format,
// text_format_source inline, json_format).
func SubstitutionFormat(s *core.SubstitutionFormatString) (*Format, error) {
	for i, f := range s.GetFormatters() {
		if f.GetName() != reqWithoutQueryFormatter {
			return nil, fmt.Errorf("formatters[%d] (%s): not supported (Weft's proxy renders %%REQ_WITHOUT_QUERY%% natively and has no other formatter extension)", i, f.GetName())
		}
	}
	if s.GetOmitEmptyValues() {
		return nil, fmt.Errorf("omit_empty_values: not supported")
	}
	switch f := s.GetFormat().(type) {
	case *core.SubstitutionFormatString_TextFormat:
		return wrap("text_format", f.TextFormat, ParseText)
	case *core.SubstitutionFormatString_TextFormatSource:
		switch d := f.TextFormatSource.GetSpecifier().(type) {
		case *core.DataSource_InlineString:
			return wrap("text_format_source.inline_string", d.InlineString, ParseText)
		case *core.DataSource_InlineBytes:
			return wrap("text_format_source.inline_bytes", string(d.InlineBytes), ParseText)
		}
		return nil, fmt.Errorf("text_format_source: only inline_string and inline_bytes are supported")
	case *core.SubstitutionFormatString_JsonFormat:
		fm, err := ParseJSON(f.JsonFormat)
		if err != nil {
			return nil, fmt.Errorf("json_format: %w", err)
		}
		return fm, nil
	}
	return nil, fmt.Errorf("format: none set")
}
