// Command printargs writes its arguments and environment as JSON, so that a
// test can compare what the app received byte for byte.
package main

import (
	"encoding/json"
	"os"
)

func main() {
	out := struct {
		Args []string `json:"args"`
		Env  []string `json:"env"`
		Cwd  string   `json:"cwd"`
	}{Args: os.Args, Env: os.Environ()}
	out.Cwd, _ = os.Getwd()
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(1)
	}
}
