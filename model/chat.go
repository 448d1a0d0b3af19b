package model

import (
	"fmt"
	"strings"
)

// Message is one turn of a conversation.
type Message struct {
	Role    string // "system", "user" or "assistant"
	Content string
}

// ChatTemplate turns a conversation into the prompt text a model was
// trained on. Its special tokens are written literally; the tokenizer
// matches them as single tokens.
type ChatTemplate int

// The chat formats turbomem knows.
const (
	ChatPlain   ChatTemplate = iota // "role: content" lines
	ChatLlama3                      // <|start_header_id|>role<|end_header_id|>
	ChatML                          // <|im_start|>role … <|im_end|> (Qwen, SmolLM)
	ChatMistral                     // [INST] … [/INST]
	ChatLlama2                      // [INST] <<SYS>> … <</SYS>> … [/INST]
)

var chatNames = []string{"plain", "llama3", "chatml", "mistral", "llama2"}

// String returns the template's name.
func (c ChatTemplate) String() string {
	if int(c) < len(chatNames) {
		return chatNames[c]
	}
	return fmt.Sprintf("ChatTemplate(%d)", int(c))
}

// DetectChatTemplate recognises the format of a Jinja chat template as
// stored in tokenizer.chat_template by the markers it writes; anything
// unrecognised (or empty) is ChatPlain.
func DetectChatTemplate(jinja string) ChatTemplate {
	switch {
	case strings.Contains(jinja, "<|start_header_id|>"):
		return ChatLlama3
	case strings.Contains(jinja, "<|im_start|>"):
		return ChatML
	case strings.Contains(jinja, "<<SYS>>"):
		return ChatLlama2
	case strings.Contains(jinja, "[INST]"):
		return ChatMistral
	}
	return ChatPlain
}

// ParseChatTemplate returns the template called name (as String prints).
func ParseChatTemplate(name string) (ChatTemplate, error) {
	for i, n := range chatNames {
		if n == name {
			return ChatTemplate(i), nil
		}
	}
	return 0, fmt.Errorf("model: unknown chat template %q (known: %s)", name, strings.Join(chatNames, ", "))
}

// Render writes msgs in the template's format, ending with the opening of
// the assistant's turn so that generation continues as the assistant. The
// BOS token is not written: the tokenizer adds it.
func (c ChatTemplate) Render(msgs []Message) (string, error) {
	for _, m := range msgs {
		switch m.Role {
		case "system", "user", "assistant":
		default:
			return "", fmt.Errorf("model: chat role %q (want system, user or assistant)", m.Role)
		}
	}
	var b strings.Builder
	switch c {
	case ChatLlama3:
		for _, m := range msgs {
			fmt.Fprintf(&b, "<|start_header_id|>%s<|end_header_id|>\n\n%s<|eot_id|>", m.Role, strings.TrimSpace(m.Content))
		}
		b.WriteString("<|start_header_id|>assistant<|end_header_id|>\n\n")
	case ChatML:
		for _, m := range msgs {
			fmt.Fprintf(&b, "<|im_start|>%s\n%s<|im_end|>\n", m.Role, m.Content)
		}
		b.WriteString("<|im_start|>assistant\n")
	case ChatMistral, ChatLlama2:
		system := ""
		for _, m := range msgs {
			switch m.Role {
			case "system":
				system = m.Content
			case "user":
				content := strings.TrimSpace(m.Content)
				if system != "" {
					if c == ChatLlama2 {
						content = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content
					} else {
						content = system + "\n\n" + content
					}
					system = ""
				}
				fmt.Fprintf(&b, "[INST] %s [/INST]", content)
			case "assistant":
				fmt.Fprintf(&b, " %s</s>", strings.TrimSpace(m.Content))
			}
		}
	default:
		for _, m := range msgs {
			fmt.Fprintf(&b, "%s: %s\n", m.Role, m.Content)
		}
		b.WriteString("assistant:")
	}
	return b.String(), nil
}
