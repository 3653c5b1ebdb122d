package region_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	_ "github.com/dogpile-go/dogpile/backends/all" // every shipped backend's name, for FromConfig
	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/region"
)

// A cached function (dogpile's cache_on_arguments): the first call for an
// argument runs the function, the next ones are served from the region.
func ExampleFunc() {
	ctx := context.Background()
	r := region.New(memory.New(), region.WithExpiration(time.Hour))
	defer r.Close()

	loadUser := func(ctx context.Context, id int) (User, error) {
		fmt.Println("query user", id) // stands for a database query
		return User{ID: int64(id), Name: "user " + strconv.Itoa(id)}, nil
	}
	getUser := region.Func(r, "users.get", loadUser)

	u, err := getUser.Get(ctx, 42)
	fmt.Println(u.Name, err)
	u, err = getUser.Get(ctx, 42) // a hit: no query
	fmt.Println(u.Name, err)

	// Invalidate removes the value: the next call queries again.
	if err := getUser.Invalidate(ctx, 42); err != nil {
		panic(err)
	}
	u, _ = getUser.Get(ctx, 42)
	fmt.Println(u.Name)

	key, _ := getUser.Key(42)
	fmt.Println("key:", key)
	// Output:
	// query user 42
	// user 42 <nil>
	// user 42 <nil>
	// query user 42
	// user 42
	// key: users.get|v1|i:42
}

// Many arguments looked up at once (dogpile's cache_multi_on_arguments):
// one creator call for the arguments without a value, and an argument the
// creator does not return is not cached.
func ExampleFuncMulti() {
	ctx := context.Background()
	r := region.New(memory.New(), region.WithExpiration(time.Hour))
	defer r.Close()

	getUsers := region.FuncMulti(r, "users.get", func(ctx context.Context, ids []int) (map[int]User, error) {
		fmt.Println("query users", ids)
		out := make(map[int]User)
		for _, id := range ids {
			if id != 3 { // there is no user 3
				out[id] = User{ID: int64(id), Name: "user " + strconv.Itoa(id)}
			}
		}
		return out, nil
	})

	us, err := getUsers.Get(ctx, 1, 2, 3)
	fmt.Println(slices.Sorted(maps.Keys(us)), err)
	us, err = getUsers.Get(ctx, 1, 2, 3, 4) // 1 and 2 are hits
	fmt.Println(slices.Sorted(maps.Keys(us)), err)

	// A Func of the same name shares the entries.
	getUser := region.Func(r, "users.get", func(ctx context.Context, id int) (User, error) {
		fmt.Println("query user", id)
		return User{ID: int64(id)}, nil
	})
	u, _ := getUser.Get(ctx, 4)
	fmt.Println(u.Name)
	// Output:
	// query users [1 2 3]
	// [1 2] <nil>
	// query users [3 4]
	// [1 2 4] <nil>
	// user 4
}

// A key generator of one's own (dogpile's function_key_generator), here
// readable keys of the namespace, the function's name and the argument.
func ExampleWithKeyGenerator() {
	ctx := context.Background()
	r := region.New(memory.New(), region.WithExpiration(time.Hour))
	defer r.Close()

	keys := region.WithKeyGenerator(func(name string, id int) (string, error) {
		return name + "_" + strconv.Itoa(id), nil
	})
	getUser := region.Func(r, "load_user_info", func(ctx context.Context, id int) (User, error) {
		return User{ID: int64(id), Name: "alice"}, nil
	}, keys, region.WithNamespace("v2"))

	key, _ := getUser.Key(7)
	fmt.Println(key)
	if _, err := getUser.Get(ctx, 7); err != nil {
		panic(err)
	}
	var u User
	found, _ := r.Get(ctx, key, &u)
	fmt.Println(found, u.Name)
	// Output:
	// load_user_info#v2_7
	// true alice
}

// A key mangler applies to the keys of a function as to every key of the
// region: here the backend sees a fixed-length hash after a prefix of the
// application's.
func ExampleFunc_keyMangler() {
	ctx := context.Background()
	b := memory.New()
	mangle := func(key string) string { return "app:" + region.HashMangler(key) }
	r := region.New(b, region.WithExpiration(time.Hour), region.WithKeyMangler(mangle))
	defer r.Close()

	type query struct { // several parameters: one struct
		Org  int
		Name string
	}
	findUser := region.Func(r, "users.find", func(ctx context.Context, q query) (User, error) {
		return User{ID: 1, Name: q.Name}, nil
	})
	q := query{Org: 3, Name: "alice"}
	if _, err := findUser.Get(ctx, q); err != nil {
		panic(err)
	}

	key, _ := findUser.Key(q)
	fmt.Println("key:", key)
	// The region's entry: its name, "k:" and the mangled key.
	vals, _ := b.GetMulti(ctx, []string{"default:k:" + mangle(key)})
	fmt.Println("stored under the mangled key:", vals[0] != nil)
	// Output:
	// key: users.find|v1|{Org=i:3,Name=s5:alice}
	// stored under the mangled key: true
}

// A region from configuration (dogpile's configure_from_config): the
// backend by name, its arguments and the region's options under a prefix.
// Importing a backend's package registers its name; backends/all imports
// every shipped one.
func ExampleFromConfig() {
	cfg := map[string]string{
		"cache.users.backend":    "memory",
		"cache.users.max_bytes":  "64MiB",
		"cache.users.name":       "users",
		"cache.users.expiration": "10m",
	}
	r, err := region.FromConfig(cfg, "cache.users.")
	if err != nil {
		panic(err)
	}
	defer r.Close()
	fmt.Println(r.Name(), r.Expiration())

	cfg["cache.users.expiration"] = "10" // no unit
	_, err = region.FromConfig(cfg, "cache.users.")
	fmt.Println(err)
	// Output:
	// users 10m0s
	// region: config cache.users.expiration="10": not a duration (examples: 500ms, 10m, 1h30m)
}

// Backend middleware (dogpile's ProxyBackend): the metrics wrapper counts
// the calls of each backend operation, their errors and latency.
func ExampleMetrics() {
	ctx := context.Background()
	m := region.NewMetrics()
	r := region.New(region.WrapBackend(memory.New(), m.Wrap), region.WithExpiration(time.Hour))
	defer r.Close()

	if err := r.SetMulti(ctx, map[string]any{"a": 1, "b": 2}); err != nil {
		panic(err)
	}
	got, _ := region.GetMulti[int](ctx, r, []string{"a", "b", "c"})
	fmt.Println(got)
	for _, op := range []string{region.OpSetMulti, region.OpGetMulti} {
		s := m.Snapshot()[op]
		fmt.Println(op, "calls:", s.Calls, "errors:", s.Errors)
	}
	// Output:
	// map[a:1 b:2]
	// set_multi calls: 1 errors: 0
	// get_multi calls: 1 errors: 0
}
