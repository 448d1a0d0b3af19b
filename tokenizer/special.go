package tokenizer

// specialMatcher finds special tokens written literally in text. It is a
// byte trie of their texts; first marks the bytes that can start one, so
// that plain text is skipped with one table look-up a byte.
type specialMatcher struct {
	nodes []trieNode
	first [256]bool
}

type trieNode struct {
	next map[byte]int32 // child node index by byte
	id   int32          // token ending here, or NoToken
}

func newSpecialMatcher(tokens []string, types []int32) specialMatcher {
	m := specialMatcher{nodes: []trieNode{{id: NoToken}}}
	for i, tok := range tokens {
		if !isSpecial(types[i]) || tok == "" {
			continue
		}
		m.first[tok[0]] = true
		n := int32(0)
		for j := 0; j < len(tok); j++ {
			next, ok := m.nodes[n].next[tok[j]]
			if !ok {
				next = int32(len(m.nodes))
				m.nodes = append(m.nodes, trieNode{id: NoToken})
				if m.nodes[n].next == nil {
					m.nodes[n].next = make(map[byte]int32)
				}
				m.nodes[n].next[tok[j]] = next
			}
			n = next
		}
		// With duplicate texts the last id wins, as in the text -> id map.
		m.nodes[n].id = int32(i)
	}
	return m
}

// find returns the leftmost special token in text, the longest one at that
// position (Hugging Face's added-vocabulary rule): its byte offset, id and
// length. Without one it returns len(text), NoToken, 0.
func (m *specialMatcher) find(text string) (at int, id int32, size int) {
	if len(m.nodes) == 1 {
		return len(text), NoToken, 0
	}
	for i := 0; i < len(text); i++ {
		if !m.first[text[i]] {
			continue
		}
		n, best, bestLen := int32(0), int32(NoToken), 0
		for j := i; j < len(text); j++ {
			next, ok := m.nodes[n].next[text[j]]
			if !ok {
				break
			}
			n = next
			if m.nodes[n].id != NoToken {
				best, bestLen = m.nodes[n].id, j+1-i
			}
		}
		if best != NoToken {
			return i, best, bestLen
		}
	}
	return len(text), NoToken, 0
}
