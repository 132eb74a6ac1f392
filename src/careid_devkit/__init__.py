"""Run the whole sign-in chain without hardware: development PKI, virtual PIV card, demo.

Everything this package makes is DEMO/TEST MATERIAL: keys, PINs and certificates that
must never be trusted outside a development machine.
"""
