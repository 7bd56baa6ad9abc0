package event

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"strings"
)

// The rules a known kind's data must follow. pgsse.publish enforces the same
// rules in SQL (migrations/20261203000002_payload_rules.sql), so a writer hears
// of a bad payload in its own transaction; TestPublish_SameRulesBothSides holds
// the two to one another. Keys match exactly (case too); a duplicate key keeps
// its last value, as jsonb does.
type rules struct {
	fields   map[string][]string // field → the JSON types it may have
	required []string
	check    func(obj map[string]json.RawMessage) error // beyond types; nil: none
}

var kindRules = map[string]rules{
	KindVideoStatus: {
		fields:   map[string][]string{"video_id": {"string"}, "status": {"string", "null"}, "previous_status": {"string", "null"}},
		required: []string{"video_id", "status"},
		check:    nonEmptyVideoID,
	},
	KindVideoProgress: {
		fields:   map[string][]string{"video_id": {"string"}, "percent": {"number"}, "stage": {"string", "null"}},
		required: []string{"video_id", "percent"},
		check: func(obj map[string]json.RawMessage) error {
			if err := nonEmptyVideoID(obj); err != nil {
				return err
			}
			// Exactly, as numeric compares it: 100.0000000000000000001 is out.
			p, ok := new(big.Rat).SetString(string(obj["percent"]))
			if !ok || p.Sign() < 0 || p.Cmp(big.NewRat(100, 1)) > 0 {
				return fmt.Errorf("percent %s is outside 0..100", obj["percent"])
			}
			return nil
		},
	},
}

// checkRules checks data against kind's rules.
func checkRules(kind string, r rules, data []byte) error {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil || obj == nil {
		return fmt.Errorf("%s data must be a JSON object", kind)
	}
	for k, v := range obj {
		types, ok := r.fields[k]
		if !ok {
			return fmt.Errorf("%s data has no field %q; its fields are %s", kind, k, strings.Join(slices.Sorted(maps.Keys(r.fields)), ", "))
		}
		if t := jsonType(v); !slices.Contains(types, t) {
			return fmt.Errorf("%s field %s must be %s, not %s", kind, k, strings.Join(types, " or "), t)
		}
	}
	for _, k := range r.required {
		if _, ok := obj[k]; !ok {
			return fmt.Errorf("%s data lacks field %s", kind, k)
		}
	}
	if r.check != nil {
		return r.check(obj)
	}
	return nil
}

func nonEmptyVideoID(obj map[string]json.RawMessage) error {
	var id string
	if err := json.Unmarshal(obj["video_id"], &id); err != nil || id == "" {
		return fmt.Errorf("video_id is empty")
	}
	return nil
}

// jsonType names a JSON value's type as jsonb_typeof does.
func jsonType(v json.RawMessage) string {
	v = bytes.TrimLeft(v, " \t\r\n")
	if len(v) == 0 {
		return "none"
	}
	switch v[0] {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	default:
		return "number"
	}
}
