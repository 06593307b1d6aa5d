package event

// decodeFlat is the fast path of Parse, which a profile of the gateway showed spending over
// half its CPU in encoding/json. It decodes raw into j when raw is exactly what SDKs send: a
// JSON object whose members are among jsonEvent's fields, spelled exactly and each at most
// once, with string values of printable ASCII and no escapes. For anything else it reports
// false and leaves j alone, for encoding/json to decide. Whenever it reports true,
// json.Unmarshal(raw, j) would have produced the same j and raw is valid UTF-8
// (FuzzParse checks this on every input).
func (j *jsonEvent) decodeFlat(raw []byte) bool {
	var d jsonEvent
	i := skipJSONSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return false
	}
	i = skipJSONSpace(raw, i+1)
	if i < len(raw) && raw[i] == '}' {
		if skipJSONSpace(raw, i+1) != len(raw) {
			return false
		}
		*j = d
		return true
	}
	for {
		key, next, ok := flatString(raw, i)
		if !ok {
			return false
		}
		i = skipJSONSpace(raw, next)
		if i >= len(raw) || raw[i] != ':' {
			return false
		}
		val, next, ok := flatString(raw, skipJSONSpace(raw, i+1))
		if !ok {
			return false
		}
		field := d.field(key)
		if field == nil || *field != nil { // unknown (maybe a case variant json would match) or repeated
			return false
		}
		s := string(val)
		*field = &s
		i = skipJSONSpace(raw, next)
		if i >= len(raw) {
			return false
		}
		switch raw[i] {
		case '}':
			if skipJSONSpace(raw, i+1) != len(raw) {
				return false
			}
			*j = d
			return true
		case ',':
			i = skipJSONSpace(raw, i+1)
		default:
			return false
		}
	}
}

// field returns the field of j whose JSON name is exactly key, or nil.
func (j *jsonEvent) field(key []byte) **string {
	switch string(key) { // no allocation: the compiler compares in place
	case "event_id":
		return &j.EventID
	case "tenant_id":
		return &j.TenantID
	case "app_id":
		return &j.AppID
	case "guid":
		return &j.GUID
	case "event":
		return &j.Event
	case "mini_program_id":
		return &j.MiniProgramID
	case "ts":
		return &j.TS
	}
	return nil
}

// flatString returns the contents of the JSON string starting at raw[i] and the index after
// it, when it holds only printable ASCII other than backslash.
func flatString(raw []byte, i int) ([]byte, int, bool) {
	if i >= len(raw) || raw[i] != '"' {
		return nil, 0, false
	}
	for k := i + 1; k < len(raw); k++ {
		switch c := raw[k]; {
		case c == '"':
			return raw[i+1 : k], k + 1, true
		case c < 0x20 || c > 0x7e || c == '\\':
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// skipJSONSpace returns the index of the first byte at or after i that is not JSON whitespace.
func skipJSONSpace(raw []byte, i int) int {
	for i < len(raw) && (raw[i] == ' ' || raw[i] == '\t' || raw[i] == '\n' || raw[i] == '\r') {
		i++
	}
	return i
}
