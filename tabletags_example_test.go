package dogpile_test

import (
	"fmt"

	"github.com/dogpile-go/dogpile"
)

func ExampleTableTags() {
	fmt.Printf("%q\n", dogpile.TableTags(`public."Users"`))
	// Output: ["users" "users#rows" "*"]
}
