OK_FORMAT = True

test = {   'name': 'q3',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': '>>> from helpers.course.feedback import first_failure\n'
                                               ">>> _ratio = table.loc['nf4', 'perplexity'] / table['perplexity'].iloc[0]\n"
                                               ">>> first_failure((lambda: nf4_increase is not ... and why is not ..., 'not done yet: set nf4_increase and why'), (lambda: abs(nf4_increase - _ratio) "
                                               "> 1e-06, 'that is the ratio of the perplexities: the increase is the ratio minus 1'), (lambda: -1 < nf4_increase < 5, lambda: f'a fraction (0.25 for "
                                               "+25 %), not a percentage: got {nf4_increase!r}'), (lambda: why in ('a', 'b', 'c'), lambda: f'why is one letter: a, b or c, got {why!r}'))\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
