/* A stand-in for Windows' bcryptprimitives.dll, which Wine 8.0 lacks.
 *
 * Rust's std (1.78 and later) imports ProcessPrng from bcryptprimitives.dll
 * to seed HashMap keys and for getrandom; without the DLL a Rust program does
 * not start under Wine 8.0. This stub implements ProcessPrng with
 * RtlGenRandom (advapi32's SystemFunction036), which Wine has. It is used
 * only to run the Windows build under Wine in CI; it is placed beside the
 * .exe by .ci/wine/runner.sh and never shipped.
 */
#include <windows.h>

typedef BOOLEAN(WINAPI *rtl_gen_random_fn)(PVOID, ULONG);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    static rtl_gen_random_fn gen;
    if (!gen) {
        HMODULE advapi = LoadLibraryA("advapi32.dll");
        if (!advapi)
            return FALSE;
        gen = (rtl_gen_random_fn)GetProcAddress(advapi, "SystemFunction036");
        if (!gen)
            return FALSE;
    }
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!gen(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}

BOOL WINAPI DllMain(HINSTANCE inst, DWORD reason, LPVOID reserved)
{
    (void)inst;
    (void)reason;
    (void)reserved;
    return TRUE;
}
