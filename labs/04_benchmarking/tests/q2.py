OK_FORMAT = True

test = {   'name': 'q2',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': '>>> from helpers.course.feedback import first_failure\n'
                                               '>>> _target, _sweeps = (SLO(ttft_s=1.5, tpot_s=0.2), SLO(ttft_s=2.0, tpot_s=0.25))\n'
                                               ">>> _strict, _loose = (bench.compare.sweep_summary(load_records, slo=s)['goodput requests/s'] for s in (_target, _sweeps))\n"
                                               '>>> _off = lambda value, expected: abs(value - expected) > 1e-06 * max(1.0, abs(expected))\n'
                                               ">>> first_failure((lambda: best_concurrency is not ... and best_goodput is not ..., 'not done yet: set best_concurrency and best_goodput'), (lambda: "
                                               "best_concurrency in settings.concurrencies, lambda: f'one of the levels you swept: {settings.concurrencies}, got {best_concurrency!r}'), (lambda: 0 <= "
                                               "best_goodput, lambda: f'goodput is requests per second, never negative: got {best_goodput!r}'), (lambda: not _off(_strict.max(), _loose.max()) or "
                                               '_off(best_goodput, _loose.max()), "that is the goodput under the sweep\'s own target (2 s, 0.25 s): re-summarise with SLO(ttft_s=1.5, tpot_s=0.2)"), '
                                               "(lambda: not _off(best_goodput, _strict.max()), lambda: f'the highest goodput under the target is not {best_goodput!r}: compare every level'), "
                                               "(lambda: not _off(float(_strict.xs(best_concurrency, level='concurrency').max()), _strict.max()), lambda: f'concurrency {best_concurrency} is not "
                                               "where that goodput was reached'))\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
