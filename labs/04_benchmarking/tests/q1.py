OK_FORMAT = True

test = {   'name': 'q1',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': '>>> from helpers.course.feedback import first_failure\n'
                                               ">>> first_failure((lambda: ttft is not ... and tpot is not ... and (itl is not ...), 'not done yet: set ttft, tpot and itl'), (lambda: abs(ttft - "
                                               "0.42) < 1e-09, lambda: f'TTFT is first token - request sent: expected 0.42 s, got {ttft!r}'), (lambda: len(itl) == len(stream) - 1, lambda: f'one gap "
                                               "per pair of consecutive tokens: expected {len(stream) - 1} values, got {len(itl)}'), (lambda: abs(tpot - sum(itl) / len(itl)) < 1e-09, lambda: f'TPOT "
                                               "= (E2E - TTFT) / (tokens - 1): the mean gap here, got {tpot!r}'))\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
