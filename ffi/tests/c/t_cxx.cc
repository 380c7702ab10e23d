// The header compiles as C++ and declares the functions with C linkage.
#include <regcache.h>
#include <cstdio>

int main() {
    regcache_attr a{};
    a.size = sizeof a;
    a.registrar = REGCACHE_REGISTRAR_NOOP;
    a.monitor = REGCACHE_MONITOR_NONE;
    regcache_cache *c = nullptr;
    if (regcache_create(&a, &c) != 0) return 1;
    if (regcache_destroy(c) != 0) return 1;
    std::puts("c++: ok");
    return 0;
}
