OK_FORMAT = True

test = {   'name': 'q1',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': ">>> assert hybrid_proportional is not ... and why_memo_differs is not ..., 'not done yet: set hybrid_proportional and why_memo_differs'\n"
                                               ">>> assert summary.loc[['all-API', 'self-hosted'], 'median'].min() <= hybrid_proportional <= summary.loc[['all-API', 'self-hosted'], 'median'].max(), "
                                               "f'a mix of the two medians lies between them: got {hybrid_proportional!r}'\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
